from fabric.protocol._framing import *  # noqa: F403  (moved to fabric/protocol/; kept for old imports)
