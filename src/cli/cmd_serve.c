/* cli/cmd_serve.c - `colobench serve` (placeholder until serve/serve.c lands). */
#include <stdio.h>

#include "cli/cmd_serve.h"

int cb_cli_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "colobench: serve: not built yet\n");
    return 2;
}
