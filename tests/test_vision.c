/* The vision model stages end to end: training on a generated CIFAR-format dataset with a
 * learnable pattern drives the loss down and the validation accuracy far above chance; the
 * trained weights saved by vision.train load into vision.eval and vision.infer in a second run;
 * the summary carries images/s and the ends of the loss curve; bad inputs and configs give
 * clear errors and a non-zero exit. Real oneDNN, real files, the real CLI. */
#include "harness.h"

#include <stdlib.h>

#define CLI CB_TEST_COLOBENCH
#define py cb_test_py_json
#define py_num cb_test_py_num

static int run(const char *cmd, char **out) {
    int st = cb_test_sh(cmd, out);
    if (st != 0) printf("# %s\n# exit %d: %s\n", cmd, st, out && *out ? *out : "");
    return st;
}

/* A CIFAR-format dataset: 2000 train, 400 test records (scripts/make_cifar.py). */
static const char *make_cifar(const char *dir) {
    static char path[512];
    snprintf(path, sizeof path, "%s/cifar", dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 " CB_TEST_SRCDIR "/scripts/make_cifar.py %s --train 2000 "
             "--test 400 --seed 3", path);
    char *out = NULL;
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    free(out);
    return path;
}

static void test_train_cifar_learns(void) {
    const char *dir = cb_test_tmpdir();
    const char *data = make_cifar(dir);
    char y[4096], cmd[2048];
    snprintf(y, sizeof y,
             "name: learn\n"
             "pipelines:\n"
             "  - name: train\n    inputs: [0]\n    outputs: [2]\n    dataset_stage_id: 0\n"
             "    loadgen: {component: offline, queue_depth: 2, config: {split_barrier: true}}\n"
             "    stages:\n"
             "      - {id: 0, name: data, component: data.cifar, outputs: [1],\n"
             "         config: {path: %s, batch_size: 50, epochs: 2, seed: 1, prefetch: 2}}\n"
             "      - {id: 1, name: prep, component: vision.preprocess, outputs: [2],\n"
             "         config: {crop: 0, random_crop: false, flip: false, mean: [0.2, 0.2, 0.2], std: [0.25, 0.25, 0.25]}}\n"
             "      - {id: 2, name: train, component: vision.train, outputs: [],\n"
             "         config: {model: cnn, optimizer: sgd, lr: 0.01, momentum: 0.9, weight_decay: 0.0001,\n"
             "                  batch_size: 50, threads: 2, weights: null, save: %s/trained.safetensors}}\n",
             data, dir);
    const char *cfg = cb_test_write(dir, "learn.yaml", y);
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out -q", cfg, dir);
    char *out = NULL;
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    free(out);
    char summary[600];
    snprintf(summary, sizeof summary, "%s/out/summary.json", dir);
    const char *m = "d[\"pipelines\"][0][\"stages\"][2][\"metrics\"]";
    char e[512];
    snprintf(e, sizeof e, "%s[\"images\"][\"sum\"]", m);
    /* 2 epochs x (40 train + 8 val batches) x 50 images */
    CB_CHECK_NEAR(py_num(summary, e), 2 * 48 * 50, 0.5);
    snprintf(e, sizeof e, "%s[\"loss\"][\"by_split\"][\"train\"][\"n\"]", m);
    CB_CHECK_NEAR(py_num(summary, e), 80, 0.5);
    snprintf(e, sizeof e, "%s[\"loss\"][\"first\"]", m);
    double first = py_num(summary, e);
    snprintf(e, sizeof e, "%s[\"loss\"][\"by_split\"][\"train\"][\"last\"]", m);
    double last = py_num(summary, e);
    printf("# loss: first batch %.3f, last train batch %.3f\n", first, last);
    CB_CHECK(first > 1.8);          /* about ln(10) = 2.30 at the start */
    CB_CHECK(last < first * 0.2);
    snprintf(e, sizeof e, "%s[\"accuracy\"][\"by_split\"][\"val\"][\"last\"]", m);
    double acc = py_num(summary, e);
    printf("# validation accuracy after 2 epochs: %.3f (chance 0.1)\n", acc);
    CB_CHECK(acc > 0.6);
    CB_CHECK(py_num(summary, "d[\"pipelines\"][0][\"images_per_s\"]") > 0);

    /* The saved weights evaluate the same way in a second run. */
    snprintf(y, sizeof y,
             "name: evaluate\n"
             "pipelines:\n"
             "  - name: eval\n    inputs: [0]\n    outputs: [2]\n    dataset_stage_id: 0\n"
             "    loadgen: {component: offline, queue_depth: 2}\n"
             "    stages:\n"
             "      - {id: 0, name: data, component: data.cifar, outputs: [1],\n"
             "         config: {path: %s/test_batch.bin, batch_size: 50, shuffle: false}}\n"
             "      - {id: 1, name: prep, component: vision.preprocess, outputs: [2],\n"
             "         config: {crop: 0, random_crop: false, flip: false, mean: [0.2, 0.2, 0.2], std: [0.25, 0.25, 0.25]}}\n"
             "      - {id: 2, name: eval, component: vision.eval, outputs: [],\n"
             "         config: {model: cnn, classes: 10, shape: [3, 32, 32], batch_size: 50, weights: %s/trained.safetensors}}\n",
             data, dir);
    cfg = cb_test_write(dir, "eval.yaml", y);
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out2", cfg, dir);
    out = NULL;
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    CB_CHECK_CONTAINS(out, "accuracy");
    free(out);
    snprintf(summary, sizeof summary, "%s/out2/summary.json", dir);
    double acc2 = py_num(summary, "d[\"pipelines\"][0][\"stages\"][2][\"metrics\"][\"accuracy\"][\"mean\"]");
    printf("# vision.eval accuracy with the saved weights: %.3f\n", acc2);
    CB_CHECK(acc2 > 0.6);
}

/* Synthetic data straight into inference, logits out, fusion on and off agree on the classes. */
static void test_infer_synthetic(void) {
    const char *dir = cb_test_tmpdir();
    char y[4096], cmd[1024];
    for (int fuse = 0; fuse < 2; fuse++) {
        snprintf(y, sizeof y,
                 "name: infer\n"
                 "pipelines:\n"
                 "  - name: serve\n    inputs: [0]\n    outputs: [1]\n    dataset_stage_id: 0\n"
                 "    loadgen: {component: closed, max_queries: 6, config: {concurrency: 1}}\n"
                 "    stages:\n"
                 "      - {id: 0, name: data, component: data.synthetic, outputs: [1],\n"
                 "         config: {shape: [3, 64, 64], classes: 10, batch_size: 2, batches_per_epoch: 6, seed: 4}}\n"
                 "      - {id: 1, name: infer, component: vision.infer, outputs: [],\n"
                 "         config: {model: resnet18, classes: 10, shape: [3, 64, 64], batch_size: 2, threads: 1, fuse: %s, seed: 9}}\n",
                 fuse ? "true" : "false");
        const char *cfg = cb_test_write(dir, fuse ? "f1.yaml" : "f0.yaml", y);
        snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out%d -q", cfg, dir, fuse);
        char *out = NULL;
        CB_CHECK_EQ_INT(run(cmd, &out), 0);
        free(out);
        char summary[600];
        snprintf(summary, sizeof summary, "%s/out%d/summary.json", dir, fuse);
        CB_CHECK_NEAR(py_num(summary, "d[\"pipelines\"][0][\"stages\"][1][\"metrics\"][\"images\"][\"sum\"]"),
                      12, 0.5);
    }
    /* Same weights (seed 9), same inputs: the per-query accuracy series agree. */
    char *a = NULL, *b = NULL;
    snprintf(cmd, sizeof cmd, "grep ',accuracy,' %s/out0/stage_metrics.csv | cut -d, -f4,11 | sort", dir);
    cb_test_sh(cmd, &a);
    snprintf(cmd, sizeof cmd, "grep ',accuracy,' %s/out1/stage_metrics.csv | cut -d, -f4,11 | sort", dir);
    cb_test_sh(cmd, &b);
    CB_CHECK(a && b && strlen(a) > 10);
    CB_CHECK_STR_EQ(a, b);
    free(a);
    free(b);
}

static void expect_fail(const char *dir, const char *name, const char *yaml, const char *needle) {
    const char *cfg = cb_test_write(dir, name, yaml);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out_%s -q", cfg, dir, name);
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    if (st == 0 || !out || !strstr(out, needle)) printf("# %s: exit %d: %s\n", name, st, out ? out : "");
    CB_CHECK(st != 0);
    CB_CHECK_CONTAINS(out, needle);
    free(out);
}

static void test_errors(void) {
    const char *dir = cb_test_tmpdir();
    const char *head =
        "name: bad\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [1]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: closed, max_queries: 2}\n    stages:\n";
    char y[2048];
    /* 8-bit images straight into a model: say what to put before it. */
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 10, batch_size: 2, format: uint8}}\n"
             "      - {id: 1, name: train, component: vision.train, outputs: [], config: {model: cnn, batch_size: 2}}\n", head);
    expect_fail(dir, "u8.yaml", y, "vision.preprocess");
    /* A weights file that does not exist is named. */
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 10, batch_size: 2}}\n"
             "      - {id: 1, name: infer, component: vision.infer, outputs: [], config: {model: cnn, classes: 10, shape: [3, 32, 32], batch_size: 2, weights: %s/nope.safetensors}}\n",
             head, dir);
    expect_fail(dir, "noweights.yaml", y, "nope.safetensors");
    /* Weights of another model: the tensor and both shapes are named. */
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 10, batch_size: 2}}\n"
             "      - {id: 1, name: train, component: vision.train, outputs: [], config: {model: cnn, batch_size: 2, save: %s/cnn10.safetensors}}\n",
             head, dir);
    const char *cfg = cb_test_write(dir, "save.yaml", y);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out_save -q", cfg, dir);
    char *out = NULL;
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    free(out);
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 7, batch_size: 2}}\n"
             "      - {id: 1, name: infer, component: vision.infer, outputs: [], config: {model: cnn, classes: 7, shape: [3, 32, 32], batch_size: 2, weights: %s/cnn10.safetensors}}\n",
             head, dir);
    expect_fail(dir, "wrongshape.yaml", y, "fc2.weight");
    /* A batch larger than the model's batch size. */
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 10, batch_size: 8}}\n"
             "      - {id: 1, name: train, component: vision.train, outputs: [], config: {model: cnn, batch_size: 4}}\n", head);
    expect_fail(dir, "batch.yaml", y, "batch_size is 4");
    /* Labels the model has no class for: the executor names the label and the range. */
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 50, batch_size: 8}}\n"
             "      - {id: 1, name: train, component: vision.train, outputs: [], config: {model: cnn, classes: 5, batch_size: 8}}\n", head);
    expect_fail(dir, "labels.yaml", y, "outside [0, 5)");
    /* One model per training stage. */
    snprintf(y, sizeof y, "%s"
             "      - {id: 0, name: data, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32], classes: 10, batch_size: 2}}\n"
             "      - {id: 1, name: train, component: vision.train, outputs: [], workers: 2, config: {model: cnn, batch_size: 2}}\n", head);
    expect_fail(dir, "workers.yaml", y, "one worker");
}

/* The three examples run as shipped, made smaller with --set only. */
static void test_examples_run(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[4096], path[600];
    char *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " run " CB_TEST_SRCDIR "/examples/cpu_train_resnet18.yaml -o %s/r18 -q"
             " --set 'pipelines.0.stages.0.config.shape=[3,32,32]'"
             " --set 'pipelines.0.stages.1.config.shape=[3,32,32]' --set pipelines.0.stages.0.config.epochs=1",
             dir);
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    free(out);
    snprintf(path, sizeof path, "%s/r18/summary.json", dir);
    /* 1 epoch x (6 train + 2 val) batches of 8, less the warm-up query */
    CB_CHECK_NEAR(py_num(path, "d[\"pipelines\"][0][\"stages\"][1][\"metrics\"][\"images\"][\"sum\"]"),
                  7 * 8, 0.5);

    const char *data = make_cifar(dir);
    snprintf(cmd, sizeof cmd, CLI " run " CB_TEST_SRCDIR "/examples/cpu_train_cifar.yaml -o %s/cifar -q"
             " --set pipelines.0.stages.0.config.path=%s --set pipelines.0.stages.0.config.epochs=1"
             " --set pipelines.0.stages.2.config.save=%s/cifar.safetensors", dir, data, dir);
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    free(out);
    snprintf(path, sizeof path, "%s/cifar.safetensors", dir);
    char *w = cb_test_read(path, NULL);
    CB_CHECK(w != NULL);
    free(w);

    snprintf(cmd, sizeof cmd, CLI " run " CB_TEST_SRCDIR "/examples/cpu_mixed.yaml -o %s/mixed -q"
             " --set pipelines.0.stages.0.config.batches_per_epoch=6 --set pipelines.0.loadgen.warmup_queries=1"
             " --set pipelines.1.loadgen.max_queries=12 --set pipelines.1.loadgen.warmup_queries=2"
             " --set 'pipelines.1.stages.0.config.shape=[3,64,64]' --set 'pipelines.1.stages.1.config.shape=[3,64,64]'",
             dir);
    CB_CHECK_EQ_INT(run(cmd, &out), 0);
    free(out);
    snprintf(path, sizeof path, "%s/mixed/summary.json", dir);
    /* Every pipeline has a slowdown: queries count by the part of their span inside the common
     * window, and training's warm-up step and first measured step, queued together (queue
     * depth 2), both overlap it however long a step takes (sanitizers, a busy machine). Should
     * one still be unavailable, it says why in the documented words (docs/outputs.md,
     * collocation) and the counts agree with the reason. */
    char *fig = py(path, "\", \".join(\"%s %s\" % (p[\"name\"], \"%.2fx\" % p[\"slowdown\"] if "
                         "p[\"slowdown\"] is not None else \"unavailable: \" + p[\"unavailable\"]) "
                         "for p in d[\"collocation\"][\"pipelines\"])");
    printf("# cpu_mixed: %s\n", fig ? fig : "(no collocation figures)");
    free(fig);
    double bad = py_num(path, "sum(1 for c in [d[\"collocation\"]] for p in c[\"pipelines\"] "
                              "for u in [p[\"unavailable\"]] if not ("
                              "(p[\"slowdown\"] is not None and p[\"slowdown\"] > 0 and "
                              "u is None) or "
                              "(p[\"slowdown\"] is None and u is not None and ("
                              "(not c[\"window_overlap\"] and \"never ran measured load\" in u) or "
                              "(p[\"queries_in_window\"] < c[\"min_queries_in_window\"] and "
                              "u.startswith(\"pipeline \" + p[\"name\"] + \" has \")) or "
                              "u.startswith(\"the baseline of \")))))");
    CB_CHECK_EQ_INT(bad, 0);
}

int main(void) {
    CB_RUN(test_train_cifar_learns);
    CB_RUN(test_infer_synthetic);
    CB_RUN(test_errors);
    CB_RUN(test_examples_run);
    return cb_test_done();
}
