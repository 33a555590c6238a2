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
        private readonly string _retrainingPhase;
        private IReadOnlyList<PrunableLayer>? _layers;

        public PruningContext(ClassifierNetwork network, ImageDataset data, PruningOptions options, int seed, IChannel channel, string retrainingPhase = "retraining")
        {
            Network = network;
            Data = data;
            _options = options;
            Seed = seed;
            Channel = channel;
            _retrainingPhase = retrainingPhase;
        }

        /// <summary>The network to prune (a copy; the trained model is not touched). Compaction replaces it by a smaller one.</summary>
        public ClassifierNetwork Network { get; private set; }

        /// <summary>The Linear and Conv2d layers of the current network.</summary>
        public IReadOnlyList<PrunableLayer> Layers => _layers ??= PrunableLayer.Find(Network);

        /// <summary>Per-group channel outcomes, filled by channel pruners.</summary>
        public List<ChannelGroupResult> ChannelResults { get; } = new();

        /// <summary>The data passed to <c>Fit</c>, after the model's transforms before the classifier.</summary>
        public ImageDataset Data { get; }

        public int Seed { get; }

        public IChannel Channel { get; }

        public CancellationToken CancellationToken => _options.CancellationToken;

        /// <summary>Per-layer outcomes, filled by the method.</summary>
        public List<LayerPruningResult> Results { get; } = new();

        /// <summary>Images the method computed statistics on.</summary>
        public long CalibrationImages { get; set; }

        /// <summary>Wall time of the passes that gathered the method's statistics over the calibration images, when it times them.</summary>
        public TimeSpan? CalibrationTime { get; set; }

        /// <summary>Images per second of those passes, when the method times them.</summary>
        public double? CalibrationImagesPerSecond { get; set; }

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

        /// <summary>
        /// The compaction stage: when <paramref name="mask"/> removes channels, replaces <see cref="Network"/> by the smaller
        /// network with those channels gone (the old one is disposed) and slices the mask's weight masks to it; then turns
        /// the mask's kernel-sparse layers into <see cref="KernelSparseConv2dLayer"/>s with their kept kernels only.
        /// </summary>
        public void Compact(PruningMask mask)
        {
            if (mask.Channels is ChannelSelection selection)
            {
                ClassifierNetwork compact = ChannelSurgery.Remove(Network, selection);
                mask.SliceTo(selection, Network.Definition);
                Replace(compact);
            }
            if (mask.KernelSparseLayers.Count > 0)
            {
                var kept = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                try
                {
                    foreach (string path in mask.KernelSparseLayers)
                    {
                        Tensor weights = mask.Get(path + ".weight") ?? throw new InvalidOperationException($"Layer '{path}' has no mask to make it kernel-sparse.");
                        using (NewDisposeScope())
                            kept[path] = weights.flatten(2).any(2).DetachFromDisposeScope();
                    }
                    // The new network is built outside any dispose scope: its modules own tensors that must outlive it.
                    Replace(Pruners.SynapticStrength.KernelSparseCompaction.Convert(Network, kept));
                }
                finally
                {
                    foreach (Tensor t in kept.Values)
                        t.Dispose();
                }
                foreach (string path in mask.KernelSparseLayers)
                    mask.Remove(path + ".weight");
                mask.KernelSparseLayers.Clear();
            }
        }

        private void Replace(ClassifierNetwork network)
        {
            Network.Dispose();
            Network = network;
            _layers = null;
        }

        /// <summary>Retrains the network with <paramref name="mask"/> fixed, for the length the options set.</summary>
        public void Retrain(PruningMask mask)
        {
            var (steps, elapsed) = MaskedRetraining.Run(Network, Data, mask, _options.ToRetrainSettings(), Seed + RetrainingSteps, Channel, CancellationToken,
                _retrainingPhase);
            RetrainingSteps += steps;
            RetrainingTime += elapsed;
        }
    }
}
