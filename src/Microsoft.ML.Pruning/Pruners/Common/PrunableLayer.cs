// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>
    /// A Linear or Conv2d layer of a network whose weights can be pruned one by one. Its weight is seen as a matrix of
    /// <see cref="Rows"/> output units by <see cref="Columns"/> inputs (Conv2d: C_in·k·k, in the order of
    /// <c>weight.view(out, -1)</c> and of <c>unfold</c>).
    /// </summary>
    internal sealed class PrunableLayer
    {
        private PrunableLayer(string path, LayerDefinition definition, nn.Module<Tensor, Tensor> module, TorchSharp.Modules.Parameter weight,
            TorchSharp.Modules.Parameter? bias)
        {
            Path = path;
            Definition = definition;
            Module = module;
            Weight = weight;
            Bias = bias;
        }

        public string Path { get; }

        public LayerDefinition Definition { get; }

        public nn.Module<Tensor, Tensor> Module { get; }

        public TorchSharp.Modules.Parameter Weight { get; }

        public TorchSharp.Modules.Parameter? Bias { get; }

        /// <summary>The name of the weight in <see cref="ClassifierNetwork.NamedParameters"/>.</summary>
        public string WeightName => Path + ".weight";

        public long Rows => Weight.shape[0];

        public long Columns => Weight.numel() / Weight.shape[0];

        public long Count => Weight.numel();

        /// <summary>The prunable layers of <paramref name="network"/>, in network order.</summary>
        public static IReadOnlyList<PrunableLayer> Find(ClassifierNetwork network)
        {
            var modules = network.Module.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
            var parameters = network.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
            var layers = new List<PrunableLayer>();
            foreach (var (path, layer) in network.Definition.Flatten())
            {
                if (layer is not (LinearLayer or Conv2dLayer))
                    continue;
                if (!modules.TryGetValue(path, out var module) || module is not nn.Module<Tensor, Tensor> typed || !parameters.TryGetValue(path + ".weight", out var weight))
                    throw new InvalidOperationException($"The network has no module or weight for its layer '{path}'.");
                parameters.TryGetValue(path + ".bias", out var bias);
                layers.Add(new PrunableLayer(path, layer, typed, weight, bias));
            }
            return layers;
        }
    }
}
