// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Networks.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.ShiftAttention
{
    /// <summary>
    /// The steps after training a shift attention network: the temperature and the one-hotness of its attention,
    /// hardening (attention → fixed one-hot masks), and compaction (hardened k×k layers → one weight and one shift per
    /// pair, with batch norm folded into the layer it follows).
    /// </summary>
    internal static class ShiftAttentionCompaction
    {
        /// <summary>The shift attention modules of <paramref name="network"/> with their module paths.</summary>
        public static IReadOnlyList<(string Path, ShiftAttentionConv2dModule Module)> AttentionModules(ClassifierNetwork network)
            => network.Module.named_modules()
                .Where(m => m.module is ShiftAttentionConv2dModule)
                .Select(m => (m.name, (ShiftAttentionConv2dModule)m.module))
                .ToList();

        /// <summary>Sets the inverse temperature of every module.</summary>
        public static void SetTemperature(IEnumerable<ShiftAttentionConv2dModule> modules, double temperature)
        {
            foreach (ShiftAttentionConv2dModule module in modules)
                module.Temperature = temperature;
        }

        /// <summary>The largest attention probability of each distribution, averaged over all of them (1 = one-hot).</summary>
        public static double MeanMaxProbability(IEnumerable<ShiftAttentionConv2dModule> modules)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            double sum = 0;
            long count = 0;
            foreach (ShiftAttentionConv2dModule module in modules)
            {
                Tensor probabilities = module.Attention();
                Tensor largest = probabilities.amax(new long[] { 2 });
                sum += largest.to_type(ScalarType.Float64).sum().item<double>();
                count += largest.numel();
            }
            return count == 0 ? 1 : sum / count;
        }

        /// <summary>
        /// A copy of <paramref name="trained"/> in which every soft shift attention layer has a fixed mask: the one-hot
        /// arg-max of its attention, or its attention rounded at 0.5. All other weights and statistics are copied.
        /// </summary>
        public static ClassifierNetwork Harden(ClassifierNetwork trained, AttentionHardening mode)
        {
            NetworkDefinition definition = trained.Definition with
            {
                Layers = NetworkWalker.MapLayers(trained.Definition.Layers, (_, layer) => layer is ShiftAttentionConv2dLayer { Hardened: false } s ? s with { Hardened = true } : layer),
            };
            ClassifierNetwork hardened = ClassifierNetwork.Create(definition, trained.Device);
            try
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var masks = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var (path, module) in AttentionModules(trained))
                {
                    if (module.Hardened)
                        continue;
                    Tensor probabilities = module.Attention();
                    masks[path + ".mask"] = mode switch
                    {
                        AttentionHardening.ArgMax => nn.functional.one_hot(probabilities.argmax(2), module.KernelSize * module.KernelSize).to_type(ScalarType.Float32),
                        // torch.round sends exactly 0.5 to 0 (half to even), hence a strict comparison.
                        AttentionHardening.Round => probabilities.gt(HeldScalars.Of(0.5)).to_type(ScalarType.Float32),
                        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown hardening."),
                    };
                }
                var source = trained.StateDictionary();
                foreach (var (name, value) in hardened.StateDictionary())
                    value.copy_(masks.TryGetValue(name, out Tensor? mask) ? mask : source[name]);
                hardened.Module.eval();
                return hardened;
            }
            catch
            {
                hardened.Dispose();
                throw;
            }
        }

        /// <summary>
        /// The deployable form of <paramref name="hardened"/>: each hardened shift attention layer becomes a
        /// <see cref="ShiftPointwiseConv2dLayer"/> (weights [out, in] and shift indices), and, when
        /// <paramref name="foldBatchNorm"/>, every batch norm that directly follows a convolution or shift layer is folded
        /// into that layer's weights and bias; the channels feeding a shared layer are reordered so that equal shifts are
        /// consecutive. In evaluation mode it computes what <paramref name="hardened"/> computes.
        /// </summary>
        /// <exception cref="InvalidOperationException">A shift attention layer has not been hardened.</exception>
        public static ClassifierNetwork Compact(ClassifierNetwork hardened, bool foldBatchNorm)
        {
            var values = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            IReadOnlyList<LayerDefinition> layers;
            using (NewDisposeScope())
            using (no_grad())
            {
                var source = hardened.StateDictionary();
                layers = NetworkWalker.RewriteSequences(hardened.Definition.Layers, (prefix, sequence) => CompactLayers(sequence, prefix, source, values, foldBatchNorm));
                foreach (var (prefix, sequence) in NetworkWalker.Sequences(layers))
                    GroupSharedShifts(sequence, prefix, source, values);
                foreach (Tensor value in values.Values)
                    value.DetachFromDisposeScope();
            }
            try
            {
                ClassifierNetwork compact = ClassifierNetwork.Create(hardened.Definition with { Layers = layers }, hardened.Device);
                try
                {
                    using var noGrad = no_grad();
                    var source = hardened.StateDictionary();
                    foreach (var (name, value) in compact.StateDictionary())
                    {
                        Tensor from = values.TryGetValue(name, out Tensor? computed) ? computed : source[name];
                        if (!from.shape.SequenceEqual(value.shape))
                            throw new InvalidOperationException($"Compaction produced '{name}' of shape [{string.Join(",", from.shape)}]; the compact layer expects [{string.Join(",", value.shape)}].");
                        value.copy_(from);
                    }
                    compact.Module.eval();
                    return compact;
                }
                catch
                {
                    compact.Dispose();
                    throw;
                }
            }
            finally
            {
                foreach (Tensor value in values.Values)
                    value.Dispose();
            }
        }

        private static List<LayerDefinition> CompactLayers(IReadOnlyList<LayerDefinition> layers, string prefix,
            IReadOnlyDictionary<string, Tensor> source, Dictionary<string, Tensor> values, bool foldBatchNorm)
        {
            var result = new List<LayerDefinition>(layers.Count);
            for (int i = 0; i < layers.Count; i++)
            {
                LayerDefinition layer = layers[i];
                string path = prefix + layer.Name;
                BatchNorm2dLayer? next = foldBatchNorm && i + 1 < layers.Count ? layers[i + 1] as BatchNorm2dLayer : null;
                (Tensor Scale, Tensor Shift)? affine = next is null ? null : BatchNormFolding.Affine(source, prefix + next.Name);
                switch (layer)
                {
                    case ShiftAttentionConv2dLayer s:
                        {
                            if (!s.Hardened)
                                throw new InvalidOperationException($"Layer '{path}' still has soft attention; harden it before compaction.");
                            var (weight, shifts) = PairWeightsAndShifts(source[path + ".weight"], source[path + ".mask"], s.KernelSize);
                            Tensor? bias = Fold(values, path, weight, s.Bias ? source[path + ".bias"] : null, affine);
                            values[path + ".shift"] = shifts;
                            result.Add(new ShiftPointwiseConv2dLayer
                            {
                                Name = s.Name, InChannels = s.InChannels, OutChannels = s.OutChannels, KernelSize = s.KernelSize,
                                Stride = s.Stride, Padding = s.Padding, Shared = s.Shared, Bias = bias is not null,
                            });
                            break;
                        }
                    case Conv2dLayer c when affine is not null:
                        Fold(values, path, source[path + ".weight"], c.Bias ? source[path + ".bias"] : null, affine);
                        result.Add(c with { Bias = true });
                        break;
                    case ShiftConv2dLayer s when affine is not null:
                        Fold(values, path, source[path + ".weight"], s.Bias ? source[path + ".bias"] : null, affine);
                        result.Add(s with { Bias = true });
                        break;
                    default:
                        result.Add(layer);
                        continue;
                }
                if (affine is not null)
                    i++; // the batch norm now lives in the layer's weights
            }
            return result;
        }

        /// <summary>
        /// Reorders the output channels of the layer that feeds each shared shift + pointwise layer (through batch norm,
        /// ReLU and pooling only) so that the channels with the same shift are consecutive: the layer then shifts
        /// contiguous blocks, as the fixed Shift layer does, instead of gathering scattered channels. The network computes
        /// the same function; only the order of some hidden channels changes.
        /// </summary>
        private static void GroupSharedShifts(IReadOnlyList<LayerDefinition> layers, string prefix, IReadOnlyDictionary<string, Tensor> source,
            Dictionary<string, Tensor> values)
        {
            Tensor Get(string name) => values.TryGetValue(name, out Tensor? value) ? value : source[name];
            void Permute(string name, long dimension, Tensor order) => values[name] = Get(name).index_select(dimension, order);

            for (int j = 0; j < layers.Count; j++)
            {
                if (layers[j] is not ShiftPointwiseConv2dLayer { Shared: true } consumer)
                    continue;
                int p = j - 1;
                while (p >= 0 && layers[p] is BatchNorm2dLayer or ReluLayer or MaxPool2dLayer)
                    p--;
                if (p < 0 || layers[p] is not (Conv2dLayer or ShiftConv2dLayer or ShiftPointwiseConv2dLayer))
                    continue;

                string consumerPath = prefix + consumer.Name;
                byte[] taps = Get(consumerPath + ".shift").data<byte>().ToArray();
                long[] order = Enumerable.Range(0, taps.Length).OrderBy(c => taps[c]).ThenBy(c => c).Select(c => (long)c).ToArray();
                if (order.Select((c, index) => c == index).All(same => same))
                    continue;
                Tensor permutation = tensor(order);

                LayerDefinition producer = layers[p];
                string producerPath = prefix + producer.Name;
                Permute(producerPath + ".weight", 0, permutation);
                if (producer is Conv2dLayer { Bias: true } or ShiftConv2dLayer { Bias: true } or ShiftPointwiseConv2dLayer { Bias: true })
                    Permute(producerPath + ".bias", 0, permutation);
                if (producer is ShiftPointwiseConv2dLayer { Shared: false })
                    Permute(producerPath + ".shift", 0, permutation);
                for (int between = p + 1; between < j; between++)
                {
                    if (layers[between] is BatchNorm2dLayer norm)
                    {
                        foreach (string tensorName in new[] { "weight", "bias", "running_mean", "running_var" })
                            Permute(prefix + norm.Name + "." + tensorName, 0, permutation);
                    }
                }
                Permute(consumerPath + ".weight", 1, permutation);
                Permute(consumerPath + ".shift", 0, permutation);
            }
        }

        /// <summary>
        /// The weight and tap of each pair from a hardened k×k kernel [out, in, k, k] and its mask [rows, in, k²]. A pair
        /// with no tap left (rounding) gets weight 0 and the centre tap.
        /// </summary>
        private static (Tensor Weight, Tensor Shifts) PairWeightsAndShifts(Tensor kernel, Tensor mask, int kernelSize)
        {
            long outChannels = kernel.shape[0], inChannels = kernel.shape[1];
            int taps = kernelSize * kernelSize;
            // One non-zero term per pair, so the sum is the tap's weight exactly.
            Tensor weight = (kernel.reshape(outChannels, inChannels, taps) * mask).sum(2);
            Tensor taken = mask.sum(2).gt(HeldScalars.Of(0));
            using Scalar centre = (taps / 2).ToScalar();
            Tensor tap = where(taken, mask.argmax(2), full_like(taken, centre, ScalarType.Int64));
            Tensor shifts = (mask.shape[0] == 1 ? tap.squeeze(0) : tap).to_type(ScalarType.Byte);
            return (weight, shifts);
        }

        /// <summary>Stores <c>{path}.weight</c> and <c>{path}.bias</c> with the batch norm folded in (when there is one);
        /// returns the bias, or null when the layer has neither bias nor batch norm.</summary>
        private static Tensor? Fold(Dictionary<string, Tensor> values, string path, Tensor weight, Tensor? bias, (Tensor Scale, Tensor Shift)? affine)
        {
            if (affine is not (Tensor scale, Tensor shift))
            {
                values[path + ".weight"] = weight;
                // A copy: the computed values are disposed after compaction, the source's tensors are not ours.
                Tensor? copy = bias?.clone();
                if (copy is not null)
                    values[path + ".bias"] = copy;
                return copy;
            }
            var (foldedWeight, foldedBias) = BatchNormFolding.Fold(weight, bias, (scale, shift));
            values[path + ".weight"] = foldedWeight;
            values[path + ".bias"] = foldedBias;
            return foldedBias;
        }
    }
}
