/* test_gpu_nn2: part 2 of the CUDA neural-network backend's tests (large shapes: device time,
 * memory at 224x224, resnet50 against the CPU, gpu_wait), a CTest test of its own so that each
 * part stays within the test timeout. The tests and their helpers are in test_gpu_nn.c. */
#define CB_GPU_NN_PART 2
#include "test_gpu_nn.c"
