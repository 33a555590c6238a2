// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>What a pruner did to one layer.</summary>
    /// <param name="Layer">The layer's path, e.g. <c>fc1</c>.</param>
    /// <param name="Weights">Prunable weights of the layer (biases excluded).</param>
    /// <param name="KeptWeights">Weights kept (non-zero after pruning).</param>
    /// <param name="RelativeError">
    /// The layer's relative reconstruction error on the calibration inputs, <c>‖(Ŵ−W)X‖² / ‖WX‖²</c> with the unpruned
    /// network's inputs X (bias included), when the method measures it; null otherwise.
    /// </param>
    /// <param name="Elapsed">Time spent choosing the layer's mask and new weights.</param>
    public sealed record LayerPruningResult(string Layer, long Weights, long KeptWeights, double? RelativeError, TimeSpan Elapsed)
    {
        /// <summary>Kept weights over weights.</summary>
        public double KeptFraction => Weights == 0 ? 1 : (double)KeptWeights / Weights;

        /// <summary>
        /// Attentive pruning: the fraction of the layer's non-zero weights that the first round's top-down pass selected at
        /// least once over the calibration images; null for other methods.
        /// </summary>
        public double? SelectedFraction { get; init; }
    }

    /// <summary>What a channel pruner did to one group of coupled channels.</summary>
    /// <param name="Group">The group's name: the path of its first producing layer (e.g. <c>conv3</c>).</param>
    /// <param name="Layers">Every layer that writes, passes or reads the group's channels.</param>
    /// <param name="Channels">Channels before pruning.</param>
    /// <param name="KeptChannels">Channels kept.</param>
    /// <param name="IsResidual">Whether the channels cross a residual sum (the width of a residual stage).</param>
    public sealed record ChannelGroupResult(string Group, IReadOnlyList<string> Layers, int Channels, int KeptChannels, bool IsResidual);

    /// <summary>What a pruner did: per-layer results and timings. Passed to <see cref="PruningOptions.PruningCompleted"/>.</summary>
    /// <param name="Method">The method, e.g. <c>lobs</c> or <c>magnitude</c>.</param>
    /// <param name="Layers">Every prunable layer, in network order.</param>
    /// <param name="PruningTime">Wall time of pruning itself: statistics, scoring, masks and weight updates; not data loading or retraining.</param>
    /// <param name="CalibrationImages">Images whose activations the method used (0 for data-free methods).</param>
    /// <param name="RetrainingSteps">Optimizer steps of retraining with the masks fixed.</param>
    /// <param name="RetrainingTime">Wall time of retraining.</param>
    public sealed record PruningReport(string Method, IReadOnlyList<LayerPruningResult> Layers, TimeSpan PruningTime, long CalibrationImages,
        long RetrainingSteps, TimeSpan RetrainingTime)
    {
        /// <summary>Channels kept per group of coupled channels (channel pruners only; null otherwise).</summary>
        public IReadOnlyList<ChannelGroupResult>? ChannelGroups { get; init; }

        /// <summary>
        /// Wall time of the passes over the calibration images that gathered the method's statistics (the attentive pruner's
        /// top-down attention, summed over its rounds); null when the method does not time them apart.
        /// </summary>
        public TimeSpan? CalibrationTime { get; init; }

        /// <summary>Calibration images per second of those passes (images times rounds over <see cref="CalibrationTime"/>); null without it.</summary>
        public double? CalibrationImagesPerSecond { get; init; }

        /// <summary>Prunable weights of all layers.</summary>
        public long Weights => Layers.Sum(l => l.Weights);

        /// <summary>Weights kept over all layers.</summary>
        public long KeptWeights => Layers.Sum(l => l.KeptWeights);

        /// <summary>Kept weights over prunable weights.</summary>
        public double KeptFraction => Weights == 0 ? 1 : (double)KeptWeights / Weights;

        /// <inheritdoc/>
        public override string ToString()
        {
            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"{Method}: kept {KeptWeights:N0} of {Weights:N0} weights ({KeptFraction:P2}) in {PruningTime.TotalSeconds:F2} s");
            if (CalibrationImages > 0)
                text.Append(CultureInfo.InvariantCulture, $", {CalibrationImages:N0} calibration images");
            if (CalibrationImagesPerSecond is double rate)
                text.Append(CultureInfo.InvariantCulture, $" ({rate:N0} images/s)");
            if (RetrainingSteps > 0)
                text.Append(CultureInfo.InvariantCulture, $"; retrained {RetrainingSteps:N0} steps in {RetrainingTime.TotalSeconds:F1} s");
            text.AppendLine();
            foreach (LayerPruningResult layer in Layers)
            {
                text.Append(CultureInfo.InvariantCulture, $"  {layer.Layer,-24} kept {layer.KeptWeights,9:N0} / {layer.Weights,9:N0} ({layer.KeptFraction,7:P2})");
                if (layer.RelativeError is double error)
                    text.Append(CultureInfo.InvariantCulture, $", relative error {error:G3}");
                if (layer.SelectedFraction is double selected)
                    text.Append(CultureInfo.InvariantCulture, $", selected by the attention {selected:P1}");
                text.AppendLine(CultureInfo.InvariantCulture, $", {layer.Elapsed.TotalMilliseconds:F0} ms");
            }
            foreach (ChannelGroupResult group in ChannelGroups ?? Array.Empty<ChannelGroupResult>())
            {
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"  channels of {group.Group,-22} kept {group.KeptChannels,5} / {group.Channels,5}{(group.IsResidual ? " (residual)" : "")}: {string.Join(", ", group.Layers)}");
            }
            return text.ToString().TrimEnd();
        }
    }
}
