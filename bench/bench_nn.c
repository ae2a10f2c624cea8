/* bench/bench_nn.c - images/s of colobench's neural-network layer for one configuration.
 *
 * One configuration per process (so each starts with a cold allocator and a fresh oneDNN
 * primitive cache, as the PyTorch side does): a model, training or inference, batch, threads,
 * image size. Input and labels are generated once (no data loading: this measures the model
 * step alone, as bench/torch_resnet.py does for PyTorch). Warm-up steps are excluded; the
 * figure is images / median step time, and the mean is printed too. With --profile the executor
 * times every primitive, and the framework's own overhead (time in a step outside oneDNN
 * primitives) is printed as a share of the step: overhead_pct, split into own_kernels_pct
 * (loss, gradient accumulation, BN statistics, optimizer) and dispatch_pct (everything else).
 * bench/nn_vs_torch.py runs this program and the PyTorch script for every configuration of the
 * issue and prints the ratios; bench/gpu_vs_torch.sh does so on a GPU.
 *
 * On a CUDA device (--device cuda:N) the executor is the cuDNN/cuBLAS backend: --precision picks
 * its arithmetic (fp32 without TF32, tf32, or the mixed bf16/fp16 where implemented).
 * cudnn_benchmark is on, as a stage's default: the first call of each shape (a warm-up step)
 * searches the algorithms. --wait picks how this thread waits for the device at the end of each
 * call (gpu/wait.h): spin by default here, which is how PyTorch waits (cudaDeviceScheduleAuto
 * spins on a machine with more cores than CUDA contexts), so the two are compared like with
 * like; a colobench stage's default is block. The input always comes from the host, as in a
 * pipeline: each call copies the caller's batch (and labels) into pinned staging on the host
 * (stage_in_ms), then to the device (copy_in_ms_per_step), then computes. The output adds:
 *   input                        "host" (colobench has no device-resident input)
 *   gpu_wait                     the wait policy
 *   device_ms_per_step           device time per step from CUDA events: from right before the
 *                                first host-to-device copy to after the last result copy (the
 *                                input copy included; the host's staging copy, plan lookup and
 *                                allocation not)
 *   copy_in_ms_per_step          of that, the input's and labels' host-to-device copies; so
 *                                device_ms_per_step - copy_in_ms_per_step is the device's
 *                                compute (with any gaps where the device waited for this
 *                                thread to enqueue the next kernel, which PyTorch's event
 *                                timing sees too) and the small copy of the results back
 *   stage_in_ms                  host time of the last step's copy into pinned staging (in
 *                                step_ms_median, not in device_ms_per_step)
 *   device_mem_peak_bytes        steady-state peak: the executor's pool high-water mark after
 *                                the plans were built, plus weights, gradients and optimizer
 *                                state (what PyTorch's max_memory_allocated shows)
 *   device_mem_plan_peak_bytes   the peak while building plans (cudnnFind's scratch)
 * images_per_s is batch / median host wall time of a step, which includes the staging copy and
 * the wait.
 *
 * Usage: bench_nn [--model resnet18] [--mode train|infer] [--batch 32] [--threads 2]
 *                 [--size 224] [--classes 1000] [--steps 10] [--warmup 3] [--fuse 0|1]
 *                 [--winograd 0|1] [--device cpu|cuda:N] [--precision fp32|tf32|bf16|fp16]
 *                 [--wait block|spin|yield] [--profile]
 * Output: one JSON line on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/stats.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/rng.h"
#include "nn/nn.h"

/* A whole decimal int, or 0 with *ok cleared. */
static int parse_int(const char *s, int *ok) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!end || end == s || *end || v < -1000000000L || v > 1000000000L) {
        *ok = 0;
        return 0;
    }
    return (int)v;
}

int main(int argc, char **argv) {
    const char *model = "resnet18", *mode = "train", *device = "cpu";
    cb_nn_precision precision = CB_NN_FP32;
    cb_gpu_wait gpu_wait = CB_GPU_WAIT_SPIN; /* PyTorch's way of waiting: like with like */
    int batch = 32, threads = 2, size = 224, classes = 1000, steps = 10, warmup = 3, fuse = 1;
    int profile = 0, winograd = 0, ok = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--profile") == 0) { profile = 1; continue; }
        if (!v) { fprintf(stderr, "bench_nn: %s needs a value\n", a); return 2; }
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--mode") == 0) mode = v;
        else if (strcmp(a, "--batch") == 0) batch = parse_int(v, &ok);
        else if (strcmp(a, "--threads") == 0) threads = parse_int(v, &ok);
        else if (strcmp(a, "--size") == 0) size = parse_int(v, &ok);
        else if (strcmp(a, "--classes") == 0) classes = parse_int(v, &ok);
        else if (strcmp(a, "--steps") == 0) steps = parse_int(v, &ok);
        else if (strcmp(a, "--warmup") == 0) warmup = parse_int(v, &ok);
        else if (strcmp(a, "--fuse") == 0) fuse = parse_int(v, &ok);
        else if (strcmp(a, "--winograd") == 0) winograd = parse_int(v, &ok);
        else if (strcmp(a, "--device") == 0) {
            if (strcmp(v, "cpu") != 0 && strncmp(v, "cuda:", 5) != 0) {
                fprintf(stderr, "bench_nn: --device cpu|cuda:N, got %s\n", v);
                return 2;
            }
            device = v; /* the ordinal is checked by cb_nn_exec_new */
        } else if (strcmp(a, "--precision") == 0) {
            if (cb_nn_precision_parse(v, &precision)) {
                fprintf(stderr, "bench_nn: --precision " CB_NN_PRECISIONS ", got %s\n", v);
                return 2;
            }
        } else if (strcmp(a, "--wait") == 0) {
            if (cb_gpu_wait_parse(v, &gpu_wait)) {
                fprintf(stderr, "bench_nn: --wait " CB_GPU_WAITS ", got %s\n", v);
                return 2;
            }
        }
        else { fprintf(stderr, "bench_nn: unknown option %s\n", a); return 2; }
        if (!ok) { fprintf(stderr, "bench_nn: %s: not a number: %s\n", a, v); return 2; }
        i++;
    }
    int train = strcmp(mode, "train") == 0;
    if (!train && strcmp(mode, "infer") != 0) { fprintf(stderr, "bench_nn: mode train|infer\n"); return 2; }
    if (batch < 1 || steps < 1 || warmup < 0 || size < 1) { fprintf(stderr, "bench_nn: bad numbers\n"); return 2; }

    cb_error err;
    cb_error_clear(&err);
    cb_nn_model *m = NULL;
    if (cb_nn_model_build(model, classes, 3, size, size, &m, &err)) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        return 1;
    }
    cb_nn_model_init(m, 1);
    cb_nn_exec_opts o = {0};
    o.batch = batch;
    o.train = train;
    o.threads = threads;
    o.device = device;
    o.precision = precision;
    o.cudnn_benchmark = 1;
    o.gpu_wait = gpu_wait;
    o.fuse = fuse;
    o.profile = profile;
    o.winograd = winograd;
    o.optim.kind = CB_NN_SGD;
    o.optim.lr = 0.01;
    o.optim.momentum = 0.9;
    o.optim.weight_decay = 1e-4;
    cb_nn_exec *e = NULL;
    int64_t t_create = cb_clock_now_ns();
    if (cb_nn_exec_new(m, &o, &e, &err)) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        cb_nn_model_free(m);
        return 1;
    }
    t_create = cb_clock_now_ns() - t_create;
    size_t n_in = (size_t)batch * 3 * (size_t)size * (size_t)size;
    float *x = cb_malloc(n_in * sizeof *x);
    int32_t *labels = cb_malloc((size_t)batch * sizeof *labels);
    float *logits = cb_malloc((size_t)batch * (size_t)classes * sizeof *logits);
    int64_t *step_ns = cb_calloc((size_t)steps, sizeof *step_ns);
    if (!x || !labels || !logits || !step_ns) { fprintf(stderr, "bench_nn: out of memory\n"); return 1; }
    cb_rng rng;
    cb_rng_seed(&rng, 7);
    for (size_t i = 0; i < n_in; i++) x[i] = (float)(cb_rng_u64(&rng) >> 40) / (float)(1 << 24) - 0.5f;
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)(cb_rng_u64(&rng) % (uint64_t)classes);

    double loss = 0;
    cb_nn_exec_stats s0 = {0}, s1;
    for (int i = 0; i < warmup + steps; i++) {
        if (i == warmup) cb_nn_exec_get_stats(e, &s0);
        int64_t t0 = cb_clock_now_ns();
        int rc;
        if (train) {
            cb_nn_result r;
            rc = cb_nn_exec_train_step(e, x, labels, batch, &r, &err);
            loss = r.loss;
        } else {
            rc = cb_nn_exec_forward(e, x, batch, logits, &err);
        }
        if (rc) { fprintf(stderr, "bench_nn: step %d: %s\n", i, err.msg); return 1; }
        if (i >= warmup) step_ns[i - warmup] = cb_clock_now_ns() - t0;
    }
    cb_nn_exec_get_stats(e, &s1);
    cb_stats_sort(step_ns, (size_t)steps);
    double med = (double)step_ns[steps / 2];
    if (steps % 2 == 0) med = 0.5 * ((double)step_ns[steps / 2 - 1] + (double)step_ns[steps / 2]);
    double sum = 0;
    for (int i = 0; i < steps; i++) sum += (double)step_ns[i];
    double total = (double)(s1.total_ns - s0.total_ns), prim = (double)(s1.primitive_ns - s0.primitive_ns);
    printf("{\"impl\": \"colobench\", \"model\": \"%s\", \"mode\": \"%s\", \"batch\": %d, "
           "\"threads\": %d, \"size\": %d, \"winograd\": %d, \"images_per_s\": %.3f, \"images_per_s_mean\": %.3f, "
           "\"step_ms_median\": %.3f, \"create_ms\": %.1f, \"gflops\": %.1f",
           model, mode, batch, threads, size, winograd, batch * 1e9 / med, batch * 1e9 * steps / sum,
           med / 1e6, (double)t_create / 1e6,
           cb_nn_model_forward_flops(m) * (train ? 3.0 : 1.0) * batch / med);
    double kern = (double)(s1.kernel_ns - s0.kernel_ns);
    if (profile && total > 0)
        printf(", \"overhead_pct\": %.2f, \"own_kernels_pct\": %.2f, \"dispatch_pct\": %.2f, "
               "\"primitive_ms_per_step\": %.3f",
               100.0 * (total - prim) / total, 100.0 * kern / total,
               100.0 * (total - prim - kern) / total, prim / steps / 1e6);
    if (strcmp(device, "cpu") != 0)
        printf(", \"device\": \"%s\", \"precision\": \"%s\", \"input\": \"host\", "
               "\"gpu_wait\": \"%s\", \"device_ms_per_step\": %.3f, "
               "\"copy_in_ms_per_step\": %.3f, \"stage_in_ms\": %.3f, "
               "\"device_mem_peak_bytes\": %lld, \"device_mem_plan_peak_bytes\": %lld",
               device, cb_nn_precision_name(precision), cb_gpu_wait_name(gpu_wait),
               (double)(s1.device_ns - s0.device_ns) / steps / 1e6,
               (double)(s1.copy_in_ns - s0.copy_in_ns) / steps / 1e6,
               (double)s1.last_stage_in_ns / 1e6, (long long)s1.device_mem_peak_bytes,
               (long long)s1.device_mem_plan_peak_bytes);
    if (train) printf(", \"loss\": %.4f", loss);
    printf("}\n");
    cb_free(x);
    cb_free(labels);
    cb_free(logits);
    cb_free(step_ns);
    cb_nn_exec_free(e);
    cb_nn_model_free(m);
    return 0;
}
