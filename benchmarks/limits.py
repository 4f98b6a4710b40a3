"""Process limits the load generator and the servers it starts need."""

import resource


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new limit.

    Children inherit it, so a server started afterwards can hold as many
    connections as the load generator opens.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
