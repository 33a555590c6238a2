// Licensed under the MIT license.

using System;
using TorchSharp;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>Maps <see cref="ComputeDevice"/> to a torch device, checking that it is there.</summary>
    internal static class TorchDevices
    {
        public static torch.Device Resolve(ComputeDevice device) => device switch
        {
            ComputeDevice.Cpu => torch.CPU,
            ComputeDevice.Cuda when torch.cuda.is_available() => torch.CUDA,
            ComputeDevice.Cuda => throw new InvalidOperationException(
                "Options.Device is Cuda, but no CUDA device is available: reference a CUDA build of libtorch (e.g. libtorch-cuda-12.x) and run on a machine with an NVIDIA GPU."),
            _ => throw new ArgumentOutOfRangeException(nameof(device), device, "Unknown device."),
        };
    }
}
