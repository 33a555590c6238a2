// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>What a pruning method works on: a copy of the network, the data, the seed, and retraining on demand.</summary>
    internal sealed class PruningContext
    {
        private readonly PruningOptions _options;

        public PruningContext(ClassifierNetwork network, ImageDataset data, PruningOptions options, int seed, IChannel channel)
        {
            Network = network;
            Data = data;
            _options = options;
            Seed = seed;
            Channel = channel;
            Layers = PrunableLayer.Find(network);
        }

        /// <summary>The network to prune in place (a copy; the trained model is not touched).</summary>
        public ClassifierNetwork Network { get; }

        public IReadOnlyList<PrunableLayer> Layers { get; }

        /// <summary>The data passed to <c>Fit</c>, after the model's transforms before the classifier.</summary>
        public ImageDataset Data { get; }

        public int Seed { get; }

        public IChannel Channel { get; }

        public CancellationToken CancellationToken => _options.CancellationToken;

        /// <summary>Per-layer outcomes, filled by the method.</summary>
        public List<LayerPruningResult> Results { get; } = new();

        /// <summary>Images the method computed statistics on.</summary>
        public long CalibrationImages { get; set; }

        public long RetrainingSteps { get; private set; }

        public TimeSpan RetrainingTime { get; private set; }

        /// <summary>At most <paramref name="count"/> images of the data, a seeded random subset when there are more (the caller owns the tensor).</summary>
        public Tensor SampleImages(long count)
        {
            if (count >= Data.Count)
                return Data.Images.alias();
            using var generator = new Generator((ulong)Seed);
            using Tensor order = randperm(Data.Count, generator: generator);
            using Tensor chosen = order.narrow(0, 0, count);
            return Data.Images.index_select(0, chosen);
        }

        /// <summary>Retrains the network with <paramref name="mask"/> fixed, for the length the options set.</summary>
        public void Retrain(PruningMask mask)
        {
            var (steps, elapsed) = MaskedRetraining.Run(Network, Data, mask, _options.ToRetrainSettings(), Seed + RetrainingSteps, Channel, CancellationToken);
            RetrainingSteps += steps;
            RetrainingTime += elapsed;
        }
    }
}
