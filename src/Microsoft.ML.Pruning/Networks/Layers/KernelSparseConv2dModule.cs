// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks.Layers
{
    /// <summary>
    /// A <see cref="KernelSparseConv2dLayer"/> on libtorch: the kept kernels are scattered into a dense [out, in, k, k]
    /// weight with zeros for the pruned connections, which <see cref="Convolution"/> then runs (padded where libtorch's
    /// convolution would be wrong). Only the kept kernels are parameters, so training it is training with the pruned
    /// connections fixed at zero. Parameters <c>weight</c> [connections, k, k] and <c>bias</c> [out]; buffer
    /// <c>connections</c> (int64, <c>o · in + i</c> of each kernel, strictly ascending).
    /// </summary>
    internal sealed class KernelSparseConv2dModule : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Parameter weight;
        private readonly TorchSharp.Modules.Parameter? bias;
        private readonly Tensor connections;
        private readonly long _inChannels, _outChannels, _kernelSize;
        private readonly long[] _stride, _padding;

        /// <summary>A layer of <paramref name="layer"/>'s shape whose first connections are kept, with He-initialized kernels
        /// (the values are meant to be loaded).</summary>
        public KernelSparseConv2dModule(KernelSparseConv2dLayer layer) : base(layer.Name)
        {
            _inChannels = layer.InChannels;
            _outChannels = layer.OutChannels;
            _kernelSize = layer.KernelSize;
            _stride = new long[] { layer.Stride, layer.Stride };
            _padding = new long[] { layer.Padding, layer.Padding };
            using (no_grad())
            {
                double std = Math.Sqrt(2.0 / (Math.Max(1L, layer.OutChannels) * _kernelSize * _kernelSize));
                using Scalar scale = std.ToScalar(), count = ((long)layer.Connections).ToScalar();
                weight = new TorchSharp.Modules.Parameter(randn(layer.Connections, _kernelSize, _kernelSize).mul_(scale));
                bias = layer.Bias ? new TorchSharp.Modules.Parameter(zeros(layer.OutChannels)) : null;
                connections = arange(count, dtype: ScalarType.Int64);
            }
            register_parameter("weight", weight);
            if (bias is not null)
                register_parameter("bias", bias);
            register_buffer("connections", connections);
        }

        /// <summary>The dense [out, in, k, k] weight: the kept kernels in place, zeros elsewhere.</summary>
        public Tensor DenseWeight()
            => zeros(new[] { _outChannels * _inChannels, _kernelSize, _kernelSize }, dtype: weight.dtype, device: weight.device)
                .index_add(0, connections, weight, HeldScalars.Of(1))
                .view(_outChannels, _inChannels, _kernelSize, _kernelSize);

        public override Tensor forward(Tensor input) => Convolution.Conv2d(input, DenseWeight(), bias, _stride, _padding);
    }
}
