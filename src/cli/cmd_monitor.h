/* cli/cmd_monitor.h - `colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND...`:
 * runs COMMAND under the resource monitors (see cmd_monitor.c). */
#ifndef CB_CLI_CMD_MONITOR_H
#define CB_CLI_CMD_MONITOR_H

/* argv[0] is "monitor". Returns the process exit status: the command's own, 128+N when it was
 * killed by signal N, 2 for bad usage, 127 when the command cannot be found, 1 when monitoring
 * itself fails. */
int cb_cli_monitor(int argc, char **argv);

#endif
