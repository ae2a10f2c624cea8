/* The self-RAG example (examples/self_rag.yaml) end to end through `colobench run`, with its
 * LLMs made small (a Qwen2-shaped config of 2 layers and width 64 that keeps Qwen's vocabulary,
 * so the example's real Qwen tokenizer still fits) and a small generated corpus, set with --set:
 *   - graders forced (bias) to say no to every passage: each query goes round the retrieval loop
 *     until the routers' max_hops (8) sends it on: 8 rounds of embed, retrieve, lookup and
 *     relevance, 7 rewrites, then one generation and the answer graders, and it ends at `done`;
 *   - graders forced to say yes: one pass, no rewrite;
 * and every query's path is in events.csv (counted per query and stage) and in trace.json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define COLOBENCH CB_TEST_BINDIR "/colobench"

static const char k_tiny_qwen[] =
    "{\"model_type\": \"qwen2\", \"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64, "
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
    "\"intermediate_size\": 160, \"vocab_size\": 151936, \"max_position_embeddings\": 4096, "
    "\"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0, \"tie_word_embeddings\": true}\n";

enum { N_STAGES = 18 };
static const char *const k_stages[N_STAGES] = {
    "questions", "decide",  "route_decide", "embed",  "retrieve",      "lookup",
    "relevance", "route_relevance", "rewrite", "prompt", "generate", "carry",
    "answer",    "support", "route_support", "useful", "route_useful", "done"};

/* Runs of each stage for each query (queries < 16) from events.csv. */
static int count_runs(const char *path, int counts[16][N_STAGES]) {
    memset(counts, 0, sizeof(int) * 16 * N_STAGES);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        char stage[64];
        long q = -1;
        if (sscanf(line, "rag,%63[^,],%*d,%ld,", stage, &q) != 2 || q < 0 || q >= 16) continue;
        for (int s = 0; s < N_STAGES; s++)
            if (!strcmp(stage, k_stages[s])) counts[q][s]++;
        rows++;
    }
    fclose(f);
    return rows;
}

static int run_example(const char *out, const char *dir, int relevance_bias, int other_bias) {
    char cmd[8192];
    size_t k = (size_t)snprintf(cmd, sizeof cmd, "'%s' run '%s/examples/self_rag.yaml' -o '%s' "
                                "--quiet", COLOBENCH, CB_TEST_SRCDIR, out);
    const char *llms[5] = {"decide", "relevance", "support", "useful", "generate"};
    for (int i = 0; i < 5; i++)
        k += (size_t)snprintf(cmd + k, sizeof cmd - k,
                              " --set pipelines.rag.stages.%s.config.model=%s/tiny_qwen.json",
                              llms[i], dir);
    k += (size_t)snprintf(
        cmd + k, sizeof cmd - k,
        " --set pipelines.rag.stages.decide.config.bias=1000"
        " --set pipelines.rag.stages.relevance.config.bias=%d"
        " --set pipelines.rag.stages.support.config.bias=%d"
        " --set pipelines.rag.stages.useful.config.bias=%d"
        " --set pipelines.rag.stages.retrieve.config.corpus=%s/corpus.jsonl"
        " --set pipelines.rag.stages.lookup.config.corpus=%s/corpus.jsonl"
        " --set pipelines.rag.stages.questions.config.file=%s/questions.jsonl"
        " --set pipelines.rag.loadgen.component=closed"
        " --set 'pipelines.rag.loadgen.config={concurrency: 3}' 2>&1",
        relevance_bias, other_bias, other_bias, dir, dir, dir);
    char *output = NULL;
    int rc = cb_test_sh(cmd, &output);
    if (rc) printf("# %s\n", output ? output : "");
    free(output);
    return rc;
}

static void test_loops_end_and_paths_are_recorded(void) {
    const char *dir = cb_test_tmpdir();
    cb_test_write(dir, "tiny_qwen.json", k_tiny_qwen);
    char cmd[2048], out[600], path[700];
    snprintf(cmd, sizeof cmd, "'%s' rag corpus -o '%s' --passages 40 --questions 4 "
             "--mean-words 15 --max-words 30 --force", COLOBENCH, dir);
    cb_test_sh_ok(cmd);
    int counts[16][N_STAGES];
    /* Relevance says no to everything: the retrieval loop goes round until max_hops. */
    snprintf(out, sizeof out, "%s/no", dir);
    CB_CHECK_EQ_INT(run_example(out, dir, -1000, 1000), 0);
    snprintf(path, sizeof path, "%s/events.csv", out);
    CB_CHECK(count_runs(path, counts) > 0);
    static const int want_no[N_STAGES] = {1, 1, 1, 8, 8, 8, 8, 8, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int q = 0; q < 4; q++)
        for (int s = 0; s < N_STAGES; s++) {
            if (counts[q][s] != want_no[s])
                printf("# query %d: %s ran %d times, expected %d\n", q, k_stages[s], counts[q][s],
                       want_no[s]);
            CB_CHECK_EQ_INT(counts[q][s], want_no[s]);
        }
    /* The same runs are on the trace's timeline. */
    snprintf(path, sizeof path, "%s/trace.json", out);
    char *trace = cb_test_read(path, NULL);
    CB_CHECK(trace && strstr(trace, "\"relevance\"") && strstr(trace, "\"rewrite\"") &&
             strstr(trace, "\"route_relevance\""));
    free(trace);
    /* Every grade says yes: one pass each, nothing rewritten. */
    snprintf(out, sizeof out, "%s/yes", dir);
    CB_CHECK_EQ_INT(run_example(out, dir, 1000, 1000), 0);
    snprintf(path, sizeof path, "%s/events.csv", out);
    CB_CHECK(count_runs(path, counts) > 0);
    static const int want_yes[N_STAGES] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int q = 0; q < 4; q++)
        for (int s = 0; s < N_STAGES; s++) CB_CHECK_EQ_INT(counts[q][s], want_yes[s]);
}

int main(void) {
    CB_RUN(test_loops_end_and_paths_are_recorded);
    return cb_test_done();
}
