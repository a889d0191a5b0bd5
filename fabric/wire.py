from fabric.protocol._wire import *  # noqa: F403  (moved to fabric/protocol/; kept for old imports)
