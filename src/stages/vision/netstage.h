/* stages/vision/netstage.h - what vision.train, vision.infer and vision.eval share: the model
 * parameters, building the model and its executor, and reading an image batch.
 *
 * A model is built in prepare() (untimed) when the stage's `shape` and `classes` are given;
 * otherwise at the first batch, from that batch's shape and the dataset's class count, in which
 * case the first query also carries the model setup (keep it in the warm-up). Every later batch
 * must have the same shape. Weights come from `weights` (safetensors, torchvision names) or
 * torchvision's random initialization from `seed`.
 *
 * Thread-safety: one instance per stage worker, nothing shared. Ownership: the instance owns
 * its model and executor; batches are borrowed from the query.
 */
#ifndef CB_STAGES_VISION_NETSTAGE_H
#define CB_STAGES_VISION_NETSTAGE_H

#include "colobench/stage.h"
#include "nn/nn.h"
#include "stages/vision/batch.h"

/* The parameters every model stage has, in this order at the start of its table. */
enum {
    CB_NP_MODEL, CB_NP_CLASSES, CB_NP_SHAPE, CB_NP_WEIGHTS, CB_NP_BATCH_SIZE, CB_NP_THREADS,
    CB_NP_DEVICE, CB_NP_SEED, CB_NP_PRECISION, CB_NP_CUDNN_BENCHMARK, CB_NP_GPU_WAIT, CB_NP_COMMON
};

#define CB_NETSTAGE_PARAMS                                                                         \
    [CB_NP_MODEL] = {"model", CB_PARAM_ENUM, "resnet18", CB_PARAM_UNBOUNDED,                       \
                     "mlp|cnn|resnet18|resnet34|resnet50",                                         \
                     "architecture (ResNets have torchvision's exact topology and names)"},        \
    [CB_NP_CLASSES] = {"classes", CB_PARAM_INT, "0", 0, 1000000,                                   \
                       NULL, "output classes (0 = the dataset's, from the first batch)"},          \
    [CB_NP_SHAPE] = {"shape", CB_PARAM_INT_LIST, NULL, 1, 65536, NULL,                             \
                     "input [C, H, W] (unset = the first batch's; set it to build in prepare)"},   \
    [CB_NP_WEIGHTS] = {"weights", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",                 \
                       "safetensors file with torchvision state-dict names (null = random "        \
                       "initialization as torchvision does it)"},                                  \
    [CB_NP_BATCH_SIZE] = {"batch_size", CB_PARAM_INT, "32", 1, 65536, NULL,                        \
                          "largest batch the model is compiled for (images per query)"},           \
    [CB_NP_THREADS] = {"threads", CB_PARAM_INT, "0", 0, 4096, NULL,                                \
                       "compute threads of this stage (0 = the library default: every core)"},     \
    [CB_NP_DEVICE] = {"device", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,                   \
                      "cpu or cuda:N (unset = the pipeline's device)"},                            \
    [CB_NP_SEED] = {"seed", CB_PARAM_INT, "-1", -1, 9.2e18, NULL,                                  \
                    "seed of the random initialization (-1 = derived from the pipeline)"},         \
    [CB_NP_PRECISION] = {"precision", CB_PARAM_ENUM, "fp32", CB_PARAM_UNBOUNDED, CB_NN_PRECISIONS, \
                         "arithmetic: fp32; tf32 (TF32 tensor cores); bf16 or fp16 mixed "         \
                         "precision as torch.autocast (fp16 with dynamic loss scaling). CUDA "     \
                         "only except fp32"},                                                      \
    [CB_NP_CUDNN_BENCHMARK] = {"cudnn_benchmark", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL, \
                               "CUDA: time every cuDNN algorithm once per layer shape and keep "   \
                               "the fastest (false: cuDNN's heuristic choice)"},                   \
    [CB_NP_GPU_WAIT] = {"gpu_wait", CB_PARAM_ENUM, "block", CB_PARAM_UNBOUNDED, CB_GPU_WAITS,      \
                        "CUDA: how the stage's thread waits for each step's device work: block "   \
                        "(sleeps, leaving its core to collocated work), spin (polls: a core "      \
                        "busy, lowest latency, PyTorch's default), yield (polls with "             \
                        "sched_yield)"}

typedef struct cb_netstage {
    const cb_host *host;
    const char *stage;             /* name, for messages */
    int arch;                      /* index into CB_NP_MODEL choices */
    const char *arch_name;
    int classes;                   /* 0 until known */
    int c, h, w;                   /* 0 until known */
    const char *weights;           /* NULL = random init */
    uint64_t seed;
    char device[32];
    cb_nn_exec_opts opts;
    cb_nn_model *model;
    cb_nn_exec *exec;
    float *logits;                 /* batch x classes, for infer/eval */
} cb_netstage;

/* Reads the common parameters; train selects a training executor (opts->optim set by caller
 * afterwards through ns->opts). */
int cb_netstage_create(cb_netstage *ns, const cb_stage_args *args, int train, cb_error *err);
/* Builds model and executor now if shape and classes are known. */
int cb_netstage_prepare(cb_netstage *ns, cb_error *err);
/* Validates q's payload as a float NCHW batch, builds the model at the first batch if needed,
 * checks the shape, and returns the batch. */
int cb_netstage_batch(cb_netstage *ns, const cb_query *q, cb_image_batch **out, cb_error *err);
/* 1 when every label of b is a class of the model (training and evaluation need not ask: the
 * executor rejects a bad label with a message naming it; inference asks to decide whether the
 * batch's accuracy can be reported). */
int cb_netstage_labels_ok(const cb_netstage *ns, cb_image_batch *b);
/* After an executor call on a CUDA device: reports the call's device time (CUDA events) as the
 * run's device time (host->device_time, events.csv device_ns), the executor's steady-state peak
 * device memory as metric `mem_metric` and its planning peak as metric `mem_metric + 1` (gauges,
 * bytes: CB_NETSTAGE_MEM_METRICS declares both, in that order). Nothing on the CPU. */
void cb_netstage_report_device(cb_netstage *ns, cb_run_ctx *ctx, int mem_metric);

/* The two metrics every model stage declares for its peak device memory, in this order. */
#define CB_NETSTAGE_MEM_METRICS                                                                    \
    {"device_mem_peak_bytes", CB_METRIC_GAUGE, "bytes",                                            \
     "steady-state peak device memory of the stage's executor: the most its stream-ordered pool " \
     "held in use during steps, plus parameters, gradients and optimizer state (PyTorch's "       \
     "max_memory_allocated after warm-up); CUDA only"},                                           \
    {"device_mem_plan_peak_bytes", CB_METRIC_GAUGE, "bytes",                                       \
     "peak device memory while choosing convolution algorithms (cudnnFind's scratch and "         \
     "workspace, given back to the device afterwards), plus the fixed arrays; CUDA only"}
void cb_netstage_destroy(cb_netstage *ns);

#endif
