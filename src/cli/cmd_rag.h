/* cli/cmd_rag.h - `colobench rag corpus` and `colobench rag ingest`: the files RAG pipelines
 * read. */
#ifndef CB_CLI_CMD_RAG_H
#define CB_CLI_CMD_RAG_H

/* argv[0] is "rag". 0 on success, 1 on failure (the reason printed), 2 for bad usage. */
int cb_cli_rag(int argc, char **argv);

#endif
