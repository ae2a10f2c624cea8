/* cli/cmd_serve.h - `colobench serve`: colobench's LLM engine as an OpenAI-compatible HTTP
 * server (serve/serve.h does the work; this file parses the arguments and prints). */
#ifndef CB_CLI_CMD_SERVE_H
#define CB_CLI_CMD_SERVE_H

/* argv[0] is "serve". SIGINT/SIGTERM must be blocked in every thread before the call (main does
 * it). Returns the exit status: 0 after a clean stop on SIGINT/SIGTERM, 1 when the server
 * failed, 2 for bad usage or configuration. */
int cb_cli_serve(int argc, char **argv);

#endif
