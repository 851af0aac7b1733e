"""Imported by the reward workers' fork server only (the first module it preloads, see :mod:`.workers`): the server
ignores Ctrl-C and SIGTERM, as the workers do. torchrun's SIGTERM to a rank's process group would otherwise end the
server, and with it (``PR_SET_PDEATHSIG``) every worker in the middle of a call while the trainer stops gracefully;
the server still exits when the trainer does (its pipe to the trainer closes). Importing this module has that side
effect on purpose."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
