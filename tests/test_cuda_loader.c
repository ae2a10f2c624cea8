/* tests/test_cuda_loader.c - the CUDA module seen from a machine with or without a GPU (label
 * cpu: runs everywhere). The binary must not depend on CUDA until a config asks for a device;
 * the module must load where it was built; every way of not having CUDA must give a clear error
 * and a non-zero exit, never a crash. On a GPU machine the device checks take the other branch
 * and assert what a present device gives. */
#include <stdlib.h>
#include <string.h>

#include "gpu/cuda.h"
#include "harness.h"
#include "nn/nn.h"

/* 1 when a library whose path contains `name` is mapped into this process. */
static int mapped(const char *name) {
    char *maps = cb_test_read("/proc/self/maps", NULL);
    int found = maps && strstr(maps, name) != NULL;
    free(maps);
    return found;
}

static void test_no_cuda_until_asked(void) {
    /* Nothing has opened the module yet: neither the CUDA runtime nor cuDNN is loaded. */
    CB_CHECK(!mapped("libcudart"));
    CB_CHECK(!mapped("libcudnn"));
    CB_CHECK(!mapped("colobench_cuda"));
    char *out = NULL;
    int st = cb_test_sh("ldd " CB_TEST_COLOBENCH, &out);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK(out && !strstr(out, "libcuda") && !strstr(out, "libcudnn") && !strstr(out, "cublas"));
    free(out);
}

static void test_parse_device(void) {
    cb_error err;
    int ord = -1;
    CB_CHECK_EQ_INT(cb_cuda_parse_device("cuda:0", &ord, &err), CB_OK);
    CB_CHECK_EQ_INT(ord, 0);
    CB_CHECK_EQ_INT(cb_cuda_parse_device("cuda:13", &ord, &err), CB_OK);
    CB_CHECK_EQ_INT(ord, 13);
    const char *bad[] = {"cpu", "cuda:", "cuda:-1", "cuda:1x", "cuda", "gpu:0", "cuda:99999", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_cuda_parse_device(bad[i], &ord, &err), CB_EINVAL);
        CB_CHECK(err.msg[0] != '\0');
    }
}

static void test_module_loads(void) {
    cb_error err;
    cb_error_clear(&err);
    cb_cuda c;
    int rc = cb_cuda_open(&c, &err);
    if (!cb_cuda_built()) {
        CB_CHECK_EQ_INT(rc, CB_EUNSUPPORTED);
        CB_CHECK_CONTAINS(err.msg, "built without CUDA");
        return;
    }
    CB_CHECK_EQ_INT(rc, CB_OK);
    if (rc) {
        printf("# %s\n", err.msg);
        return;
    }
    CB_CHECK_EQ_INT(c.api->version, CB_CUDA_API_VERSION);
    CB_CHECK_CONTAINS(c.api->build, "cuDNN 9");
    CB_CHECK_CONTAINS(c.path, "colobench_cuda.so");
    CB_CHECK(mapped("colobench_cuda"));
    /* Every entry of this build's module is filled in. */
    CB_CHECK(c.api->device_count && c.api->device_info && c.api->nn);
    CB_CHECK(c.api->spin_create && c.api->spin_run && c.api->spin_destroy);
    CB_CHECK(c.api->copy_create && c.api->copy_run && c.api->copy_destroy);
    CB_CHECK_STR_EQ(c.api->nn->name, "cuda");
    cb_cuda_close(&c);
    cb_cuda_close(&c); /* closing twice is a no-op */
}

static void test_module_path_override(void) {
    cb_error err;
    cb_cuda c;
    setenv("CB_CUDA_MODULE", "/nonexistent/colobench_cuda.so", 1);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_cuda_open(&c, &err), CB_EUNSUPPORTED);
    CB_CHECK_CONTAINS(err.msg, "does not exist");
    /* A shared object that is not the module: the example stage plugin. */
    setenv("CB_CUDA_MODULE", CB_TEST_BINDIR "/plugins/example_plugin.so", 1);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_cuda_open(&c, &err), CB_EUNSUPPORTED);
    CB_CHECK_CONTAINS(err.msg, "has no symbol cb_cuda_entry");
    /* Not a shared object at all. */
    const char *dir = cb_test_tmpdir();
    const char *junk = cb_test_write(dir, "junk.so", "not an ELF file\n");
    setenv("CB_CUDA_MODULE", junk, 1);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_cuda_open(&c, &err), CB_EUNSUPPORTED);
    CB_CHECK_CONTAINS(err.msg, "cannot load");
    unsetenv("CB_CUDA_MODULE");
}

static void test_devices(void) {
    if (!cb_cuda_built()) return;
    cb_error err;
    cb_error_clear(&err);
    cb_cuda c;
    int rc = cb_cuda_open_device(&c, 0, &err);
    if (rc) {
        /* No GPU: a clear reason, and the module is not held. */
        printf("# no CUDA device here: %s\n", err.msg);
        CB_CHECK_EQ_INT(rc, CB_EUNSUPPORTED);
        CB_CHECK_EQ_INT(err.code, CB_EUNSUPPORTED);
        CB_CHECK(strncmp(err.msg, "CUDA devices are unavailable: ", 30) == 0);
        CB_CHECK(c.handle == NULL);
        return;
    }
    int n = 0;
    CB_CHECK_EQ_INT(c.api->device_count(&n, &err), CB_OK);
    CB_CHECK_CMP_INT(n, >=, 1);
    cb_cuda_device_info info;
    CB_CHECK_EQ_INT(c.api->device_info(0, &info, &err), CB_OK);
    CB_CHECK(info.name[0] != '\0' && info.sms > 0 && info.memory_bytes > 0 && info.major >= 7);
    CB_CHECK(info.free_bytes > 0 && info.free_bytes <= info.memory_bytes);
    cb_cuda_close(&c);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_cuda_open_device(&c, 4000, &err), CB_EUNSUPPORTED);
    CB_CHECK_CONTAINS(err.msg, "does not exist");
}

/* The versions of the CUDA stack are read without a device: the libraries the module links
 * (cudart, cuDNN, cuBLAS) are those it was built with here, so they are compatible. */
static void test_versions(void) {
    if (!cb_cuda_built()) return;
    cb_error err;
    cb_error_clear(&err);
    cb_cuda c;
    CB_CHECK_EQ_INT(cb_cuda_open(&c, &err), CB_OK);
    if (!c.api) return;
    cb_cuda_versions v;
    int rc = c.api->versions(&v, &err);
    printf("# driver %d, runtime %d (built %d), cuDNN %d (built %d, for CUDA %d), cuBLAS %d "
           "(built %d)\n", v.driver, v.runtime, v.built_runtime, v.cudnn, v.built_cudnn,
           v.cudnn_cudart, v.cublas, v.built_cublas);
    CB_CHECK_EQ_INT(rc, CB_OK);
    CB_CHECK_CMP_INT(v.built_runtime, >=, 13000);
    CB_CHECK_EQ_INT(v.runtime / 1000, v.built_runtime / 1000);
    CB_CHECK_EQ_INT(v.cudnn / 10000, v.built_cudnn / 10000);
    CB_CHECK_EQ_INT(v.cublas / 10000, v.built_cublas / 10000);
    CB_CHECK_CMP_INT(v.cudnn_cudart, >=, 13000);
    cb_cuda_close(&c);
}

static void test_executor_devices(void) {
    cb_error err;
    cb_nn_model *m = NULL;
    CB_CHECK_EQ_INT(cb_nn_model_build("mlp", 10, 1, 8, 8, &m, &err), CB_OK);
    if (!m) return;
    cb_nn_model_init(m, 1);
    cb_nn_exec_opts o = {.batch = 4, .train = 1, .device = "tpu:0"};
    cb_nn_exec *e = NULL;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_nn_exec_new(m, &o, &e, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "unknown device");
    o.device = "cuda:zero";
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_nn_exec_new(m, &o, &e, &err), CB_EINVAL);
    /* 16-bit precisions are CUDA's; the CPU backend says so instead of computing fp32. */
    o.device = "cpu";
    o.precision = CB_NN_BF16;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_nn_exec_new(m, &o, &e, &err), CB_EUNSUPPORTED);
    CB_CHECK_CONTAINS(err.msg, "bf16 needs a cuda device");
    o.precision = (cb_nn_precision)9;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_nn_exec_new(m, &o, &e, &err), CB_EINVAL);
    o.precision = CB_NN_FP32;
    o.device = "cuda:0";
    cb_cuda c;
    cb_error probe;
    int have_gpu = cb_cuda_open_device(&c, 0, &probe) == CB_OK;
    cb_cuda_close(&c);
    cb_error_clear(&err);
    int rc = cb_nn_exec_new(m, &o, &e, &err);
    if (have_gpu) {
        CB_CHECK_EQ_INT(rc, CB_OK);
    } else {
        CB_CHECK_EQ_INT(rc, CB_EUNSUPPORTED);
        CB_CHECK_CONTAINS(err.msg, "device cuda:0: ");
        CB_CHECK_CONTAINS(err.msg, "CUDA");
        CB_CHECK(e == NULL);
    }
    cb_nn_exec_free(e);
    cb_nn_model_free(m);
}

static void test_precision_names(void) {
    cb_nn_precision p;
    const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    for (int i = 0; i < 4; i++) {
        CB_CHECK_EQ_INT(cb_nn_precision_parse(names[i], &p), CB_OK);
        CB_CHECK_EQ_INT(p, i);
        CB_CHECK_STR_EQ(cb_nn_precision_name(p), names[i]);
    }
    CB_CHECK_EQ_INT(cb_nn_precision_parse("fp8", &p), CB_EINVAL);
    CB_CHECK_EQ_INT(cb_nn_precision_parse(NULL, &p), CB_EINVAL);
    const char *waits[] = {"block", "spin", "yield"};
    for (int i = 0; i < 3; i++) {
        cb_gpu_wait w = CB_GPU_WAIT_BLOCK;
        CB_CHECK_EQ_INT(cb_gpu_wait_parse(waits[i], &w), 0);
        CB_CHECK_EQ_INT(w, i);
        CB_CHECK_STR_EQ(cb_gpu_wait_name(w), waits[i]);
    }
    cb_gpu_wait w = CB_GPU_WAIT_SPIN;
    CB_CHECK_EQ_INT(cb_gpu_wait_parse("sleep", &w), -1);
    CB_CHECK_EQ_INT(cb_gpu_wait_parse(NULL, &w), -1);
    CB_CHECK_EQ_INT(w, CB_GPU_WAIT_SPIN); /* untouched on failure */
}

/* A whole run that asks for a CUDA device on a machine without one fails before the start with
 * a message naming the stage; one that asks for bf16 on the CPU fails at config time with the
 * file, line and key. */
static void test_run_without_device(void) {
    cb_cuda c;
    cb_error probe;
    if (cb_cuda_open_device(&c, 0, &probe) == CB_OK) {
        cb_cuda_close(&c);
        return; /* a GPU is here: test_gpu_* cover the runs */
    }
    const char *dir = cb_test_tmpdir();
    const char *tmpl =
        "name: t\n"
        "pipelines:\n"
        "  - name: a\n"
        "    inputs: [0]\n"
        "    outputs: [1]\n"
        "    dataset_stage_id: 0\n"
        "    loadgen: {component: offline, max_queries: 2}\n"
        "    stages:\n"
        "      - {id: 0, name: data, component: data.synthetic, outputs: [1],\n"
        "         config: {shape: [3, 8, 8], classes: 4, batch_size: 2, batches_per_epoch: 2}}\n"
        "      - {id: 1, name: learner, component: vision.train, outputs: [],\n"
        "         config: {model: mlp, classes: 4, shape: [3, 8, 8], batch_size: 2, %s}}\n";
    char yaml[2048];
    snprintf(yaml, sizeof yaml, tmpl, "device: cuda:0");
    const char *path = cb_test_write(dir, "cuda.yaml", yaml);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s run %s -o %s/out1 2>&1", CB_TEST_COLOBENCH, path, dir);
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    CB_CHECK(st > 0);
    CB_CHECK_CONTAINS(out, "stage 'learner'");
    CB_CHECK_CONTAINS(out, "CUDA");
    free(out);
    snprintf(yaml, sizeof yaml, tmpl, "precision: fp16");
    path = cb_test_write(dir, "fp16.yaml", yaml);
    snprintf(cmd, sizeof cmd, "%s run %s -o %s/out2 2>&1", CB_TEST_COLOBENCH, path, dir);
    out = NULL;
    st = cb_test_sh(cmd, &out);
    CB_CHECK(st > 0);
    CB_CHECK_CONTAINS(out, "fp16.yaml:12:");
    CB_CHECK_CONTAINS(out, "precision: fp16 needs a CUDA device");
    free(out);
    /* A wait policy that does not exist: refused at config time, naming the key and choices. */
    snprintf(yaml, sizeof yaml, tmpl, "gpu_wait: sleep");
    path = cb_test_write(dir, "wait.yaml", yaml);
    snprintf(cmd, sizeof cmd, "%s validate %s 2>&1", CB_TEST_COLOBENCH, path);
    out = NULL;
    st = cb_test_sh(cmd, &out);
    CB_CHECK(st > 0);
    CB_CHECK_CONTAINS(out, "wait.yaml:12:");
    CB_CHECK_CONTAINS(out, "gpu_wait");
    CB_CHECK_CONTAINS(out, "block|spin|yield");
    free(out);
}

/* `colobench devices`: the module and devices, or why none; exit status for scripts. */
static void test_devices_command(void) {
    cb_cuda c;
    cb_error probe;
    int have_gpu = cb_cuda_open_device(&c, 0, &probe) == CB_OK;
    cb_cuda_close(&c);
    char *out = NULL;
    int st = cb_test_sh(CB_TEST_COLOBENCH " devices", &out);
    if (have_gpu) {
        CB_CHECK_EQ_INT(st, 0);
        CB_CHECK_CONTAINS(out, "cuda:0  ");
    } else {
        CB_CHECK_EQ_INT(st, 1);
        CB_CHECK_CONTAINS(out, cb_cuda_built() ? "cuda devices: none: " : "built without CUDA");
    }
    if (cb_cuda_built()) CB_CHECK_CONTAINS(out, "cuda stack: driver ");
    free(out);
    out = NULL;
    CB_CHECK_EQ_INT(cb_test_sh(CB_TEST_COLOBENCH " devices --bogus 2>&1", &out), 2);
    CB_CHECK_CONTAINS(out, "unexpected argument");
    free(out);
}

int main(void) {
    CB_RUN(test_no_cuda_until_asked);
    CB_RUN(test_parse_device);
    CB_RUN(test_precision_names);
    CB_RUN(test_module_path_override);
    CB_RUN(test_module_loads);
    CB_RUN(test_devices);
    CB_RUN(test_versions);
    CB_RUN(test_executor_devices);
    CB_RUN(test_run_without_device);
    CB_RUN(test_devices_command);
    return cb_test_done();
}
