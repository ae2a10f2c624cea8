/* cli/cmd_devices.h - `colobench devices`: the CUDA module and the devices it sees. */
#ifndef CB_CLI_CMD_DEVICES_H
#define CB_CLI_CMD_DEVICES_H

/* argv[0] is "devices". Prints the module (path, toolkit versions) and one line per visible
 * CUDA device, or why there is none. Returns 0 when at least one device is usable, 1 when none
 * (no module, no driver, no GPU: the reason is printed), 2 for bad usage. */
int cb_cli_devices(int argc, char **argv);

#endif
