// vram_support.h — whether `--mem vram` can run here, asked once before a subcommand
// allocates anything, so a machine without a GPU (or a build without CUDA) gets one
// clear line and exit code 2 rather than an error from deep inside an allocation.
// Compiled in every build; only the answer differs.
#pragma once

#include <optional>
#include <string>

namespace kvferry::cli {

// CUDA GPUs this process can use; 0 without a GPU, without a driver, or without CUDA.
int cuda_gpu_count();

// Why GPU `device` cannot hold a pool here ("built without CUDA ...", "no CUDA GPU
// here ...", "--device 3: this machine has 2 CUDA GPUs (0-1)"), or nullopt when it can.
// `option` names the flag that chose the device, for the message.
std::optional<std::string> vram_unusable(int device, const std::string& option = "--device");

// The GPU a second process should use when none was given: the one after `device`
// when there is one, else `device` itself (one GPU: both processes share it).
int next_gpu(int device);

}  // namespace kvferry::cli
