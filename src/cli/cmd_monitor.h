/* cli/cmd_monitor.h - `colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND...`:
 * parses the arguments and runs COMMAND under the resource monitors through the experiment
 * layer (experiment/watch.h; see cmd_monitor.c). */
#ifndef CB_CLI_CMD_MONITOR_H
#define CB_CLI_CMD_MONITOR_H

#include "experiment/signals.h"

/* argv[0] is "monitor". signals: the signal thread the caller started after blocking SIGINT and
 * SIGTERM (cb_signals_block), through which they are forwarded to the command; NULL: not
 * forwarded. Returns the process exit status: the command's own, 128+N when it was killed by
 * signal N, 2 for bad usage or an output directory in use, 127 when the command cannot be found
 * (126 not executable), 1 when monitoring itself fails. */
int cb_cli_monitor(int argc, char **argv, cb_sigwatch *signals);

#endif
