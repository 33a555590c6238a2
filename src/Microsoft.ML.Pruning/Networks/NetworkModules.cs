// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>Builds TorchSharp modules from layer definitions; parameter names follow the definition's layer names.</summary>
    internal static class NetworkModules
    {
        public const string BodyName = "body";
        public const string ShortcutName = "shortcut";

        /// <summary>The epsilon of every batch-norm layer built here (TorchSharp's BatchNorm2d default); folding batch norm
        /// into a preceding layer uses the same value.</summary>
        public const double BatchNormEpsilon = 1e-5;

        /// <summary>Builds the whole network with freshly initialized weights (draws from torch's global generator).</summary>
        public static nn.Module<Tensor, Tensor> Build(NetworkDefinition definition)
        {
            definition.Validate();
            return Sequential(definition.Layers);
        }

        private static nn.Module<Tensor, Tensor> Sequential(IReadOnlyList<LayerDefinition> layers)
            => nn.Sequential(layers.Select(l => (l.Name, Build(l))).ToArray());

        private static nn.Module<Tensor, Tensor> Build(LayerDefinition layer) => layer switch
        {
            NormalizeLayer n => new NormalizeModule(n.Name, n.Mean, n.Std),
            Conv2dLayer c => Conv(c),
            BatchNorm2dLayer b => nn.BatchNorm2d(b.Channels, eps: BatchNormEpsilon),
            ReluLayer => nn.ReLU(inplace: true),
            MaxPool2dLayer p => nn.MaxPool2d(p.KernelSize, p.KernelSize),
            GlobalAvgPoolLayer g => new GlobalAvgPoolModule(g.Name),
            FlattenLayer => nn.Flatten(),
            LinearLayer l => nn.Linear(l.InFeatures, l.OutFeatures, hasBias: l.Bias),
            ResidualBlock r => new ResidualBlockModule(r.Name, Sequential(r.Body), r.Shortcut.Count == 0 ? null : Sequential(r.Shortcut)),
            KernelSparseConv2dLayer k => new KernelSparseConv2dModule(k),
            ShiftAttentionConv2dLayer s => new ShiftAttentionConv2dModule(s),
            ShiftConv2dLayer s => new ShiftPointwiseConv2dModule(s.Name, s.InChannels, s.OutChannels, s.KernelSize, s.Stride, s.Padding,
                shared: true, s.Bias, ShiftConv2dLayer.GroupedShifts(s.InChannels, s.KernelSize)),
            ShiftPointwiseConv2dLayer s => new ShiftPointwiseConv2dModule(s.Name, s.InChannels, s.OutChannels, s.KernelSize, s.Stride, s.Padding,
                s.Shared, s.Bias, fixedShifts: null),
            _ => throw new NotSupportedException($"Layer '{layer.Name}' of kind {layer.GetType().Name} has no module builder."),
        };

        private static nn.Module<Tensor, Tensor> Conv(Conv2dLayer c)
        {
            var conv = nn.Conv2d(c.InChannels, c.OutChannels, c.KernelSize, stride: c.Stride, padding: c.Padding, bias: c.Bias);
            // He initialization (fan-out, ReLU), as torchvision's VGG and ResNet: trains the batch-norm nets faster than the default.
            nn.init.kaiming_normal_(conv.weight, mode: nn.init.FanInOut.FanOut, nonlinearity: nn.init.NonlinearityType.ReLU);
            return Convolution.Pads(c.InChannels, c.OutChannels, c.KernelSize, c.Stride) ? new PaddedConv2dModule(c.Name, conv, c.Stride, c.Padding) : conv;
        }
    }
}
