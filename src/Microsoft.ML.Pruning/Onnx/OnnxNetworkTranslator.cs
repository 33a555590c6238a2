// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Onnx
{
    /// <summary>
    /// Translates a <see cref="ClassifierNetwork"/> — dense, weight-pruned, channel-pruned or compact shift network — into
    /// standard ONNX operators (default domain, opset <see cref="MinimumOpset"/> or later), walking its definition with
    /// <see cref="NetworkWalker"/>.
    /// </summary>
    /// <remarks>
    /// <para>Operators, per layer kind:</para>
    /// <list type="bullet">
    /// <item><description>the input: <c>Reshape</c> to [N, C, H, W] (a flat or an image-shaped feature column both fit);</description></item>
    /// <item><description><see cref="NormalizeLayer"/>: <c>Sub</c> mean, <c>Mul</c> by 1/std (per channel);</description></item>
    /// <item><description><see cref="Conv2dLayer"/>: <c>Conv</c>, with the batch norm that follows folded into its weight and bias
    /// (<see cref="BatchNormFolding"/>, as the compact runtime folds it). Pruned weights are written as the zeros they are: an ONNX
    /// <c>Conv</c> or <c>Gemm</c> has no sparse form that ONNX Runtime's CPU kernels exploit;</description></item>
    /// <item><description>a batch norm that follows no convolution: <c>Mul</c> and <c>Add</c> per channel (its evaluation-mode affine map);</description></item>
    /// <item><description><see cref="ReluLayer"/>: <c>Relu</c>; <see cref="MaxPool2dLayer"/>: <c>MaxPool</c> (window = stride, floor);
    /// <see cref="GlobalAvgPoolLayer"/>: <c>GlobalAveragePool</c> then <c>Flatten</c>; <see cref="FlattenLayer"/>: <c>Flatten</c>;
    /// <see cref="LinearLayer"/>: <c>Gemm</c> (transB = 1);</description></item>
    /// <item><description><see cref="ResidualBlock"/>: its body and shortcut (identity when empty), <c>Add</c>, <c>Relu</c>;</description></item>
    /// <item><description>shifts shared per input channel (<see cref="ShiftConv2dLayer"/>, shared <see cref="ShiftPointwiseConv2dLayer"/>):
    /// <c>Pad</c> once, then per shift (tap) one <c>Slice</c> of its channels (a <c>Gather</c> first when they are not consecutive),
    /// carrying the stride; <c>Concat</c>; a 1×1 <c>Conv</c> whose weight columns follow the concatenated channel order. The file holds
    /// the out·in pointwise weights, the cost is a 1×1 convolution's;</description></item>
    /// <item><description>shifts per (output, input) pair (<see cref="ShiftPointwiseConv2dLayer"/>): <c>Pad</c>, one <c>Slice</c> of all
    /// channels per tap that some pair uses, <c>Concat</c>, and a 1×1 <c>Conv</c> whose weight [out, taps·in] is computed in the graph from
    /// the stored out·in weights and tap indices (<c>Cast</c> of the uint8 taps, <c>Equal</c>, <c>Cast</c>, <c>Mul</c>, <c>Reshape</c> on initializers; ONNX Runtime folds
    /// these constants when it loads the model). The file stays compact — out·in weights and out·in small integers, not a k×k one-hot
    /// kernel — but ONNX Runtime computes that layer at the cost of a convolution over every used tap;</description></item>
    /// <item><description>the scores: <c>Softmax</c> over the classes.</description></item>
    /// </list>
    /// <para>Opset 11 is the oldest that fits: <c>Pad</c> takes its pads as an input from 11 on, <c>Slice</c> its starts, ends, axes and
    /// steps from 10 on. Shift attention layers still in training form (<see cref="ShiftAttentionConv2dLayer"/>) are refused, naming the
    /// layer: the deployable form is the compact shift + pointwise network.</para>
    /// </remarks>
    internal sealed class OnnxNetworkTranslator
    {
        /// <summary>The oldest ONNX opset the translation is valid in.</summary>
        public const int MinimumOpset = 11;

        private const long OnnxFloat = 1; // TensorProto.DataType.FLOAT
        private const long OnnxInt64 = 7; // TensorProto.DataType.INT64

        private readonly IOnnxGraphWriter _graph;
        private readonly IReadOnlyDictionary<string, Tensor> _state;
        private readonly Dictionary<string, string> _constants = new(StringComparer.Ordinal);

        private OnnxNetworkTranslator(IOnnxGraphWriter graph, IReadOnlyDictionary<string, Tensor> state)
        {
            _graph = graph;
            _state = state;
        }

        /// <summary>Throws a <see cref="NotSupportedException"/> naming the first layer of <paramref name="definition"/> that has no
        /// ONNX translation.</summary>
        public static void CheckExportable(NetworkDefinition definition)
        {
            ArgumentNullException.ThrowIfNull(definition);
            foreach (LayerSite site in NetworkWalker.Walk(definition))
            {
                switch (site.Layer)
                {
                    case NormalizeLayer or Conv2dLayer or BatchNorm2dLayer or ReluLayer or MaxPool2dLayer or GlobalAvgPoolLayer
                        or FlattenLayer or LinearLayer or ResidualBlock or ShiftConv2dLayer or ShiftPointwiseConv2dLayer:
                        break;
                    case ShiftAttentionConv2dLayer:
                        throw new NotSupportedException(
                            $"Layer '{site.Path}' (ShiftAttentionConv2dLayer) cannot be exported to ONNX: it is a shift attention layer in its " +
                            "training form. Export the compact network that mlContext.Transforms.PruneAttention returns (shift + pointwise layers).");
                    default:
                        throw new NotSupportedException($"Layer '{site.Path}' ({site.Layer.GetType().Name}) has no ONNX translation.");
                }
            }
        }

        /// <summary>
        /// Adds <paramref name="network"/> to <paramref name="graph"/>: reads the images from the variable <paramref name="images"/>
        /// (float32, [N, C·H·W] or [N, C, H, W]) and writes the class probabilities, [N, classes], to the existing variable
        /// <paramref name="probabilities"/>.
        /// </summary>
        /// <exception cref="NotSupportedException">A layer has no ONNX translation; the message names it. Nothing is added then.</exception>
        public static void AddNetwork(ClassifierNetwork network, IOnnxGraphWriter graph, string images, string probabilities)
        {
            ArgumentNullException.ThrowIfNull(network);
            ArgumentNullException.ThrowIfNull(graph);
            NetworkDefinition definition = network.Definition;
            CheckExportable(definition);
            using var scope = NewDisposeScope();
            var translator = new OnnxNetworkTranslator(graph, network.StateDictionary());
            ImageShape input = definition.Input;
            string x = translator.Node("Reshape", "input.reshape", new[] { images, translator.Int64s(-1, input.Channels, input.Height, input.Width) });
            string logits = translator.AddSequence(definition.Layers, definition.InputDimensions, "", x);
            graph.AddNode("Softmax", new[] { logits }, new[] { probabilities }, "softmax", new[] { OnnxAttribute.Of("axis", 1L) });
        }

        /// <summary>Adds the layers of one sequence (the network's, or a residual block's branch) and returns its output variable.</summary>
        private string AddSequence(IReadOnlyList<LayerDefinition> layers, int[] input, string scope, string x)
        {
            List<LayerSite> sites = NetworkWalker.Walk(layers, input, scope).Where(s => s.Scope == scope).ToList();
            for (int i = 0; i < sites.Count; i++)
            {
                LayerSite site = sites[i];
                string path = site.Path;
                switch (site.Layer)
                {
                    case NormalizeLayer normalize:
                        {
                            long[] perChannel = { 1, normalize.Mean.Length, 1, 1 };
                            float[] inverse = normalize.Std.Select(s => 1f / s).ToArray(); // as NormalizeModule computes it
                            string centred = Node("Sub", path + ".sub", new[] { x, _graph.AddFloats(path + ".mean", normalize.Mean, perChannel) });
                            x = Node("Mul", path + ".mul", new[] { centred, _graph.AddFloats(path + ".inverse_std", inverse, perChannel) });
                            break;
                        }
                    case KernelLayerDefinition kernel:
                        {
                            var norm = site.Next as BatchNorm2dLayer;
                            x = AddKernelLayer(site, kernel, norm, x);
                            if (norm is not null)
                                i++;
                            break;
                        }
                    case BatchNorm2dLayer norm:
                        {
                            var (scale, shift) = BatchNormFolding.Affine(_state, path);
                            long[] perChannel = { 1, norm.Channels, 1, 1 };
                            string scaled = Node("Mul", path + ".mul", new[] { x, _graph.AddFloats(path + ".scale", Floats(scale), perChannel) });
                            x = Node("Add", path + ".add", new[] { scaled, _graph.AddFloats(path + ".shift", Floats(shift), perChannel) });
                            break;
                        }
                    case ReluLayer:
                        x = Node("Relu", path, new[] { x });
                        break;
                    case MaxPool2dLayer pool:
                        x = Node("MaxPool", path, new[] { x },
                            OnnxAttribute.Of("kernel_shape", pool.KernelSize, pool.KernelSize), OnnxAttribute.Of("strides", pool.KernelSize, pool.KernelSize));
                        break;
                    case GlobalAvgPoolLayer:
                        x = Node("Flatten", path + ".flatten", new[] { Node("GlobalAveragePool", path, new[] { x }) }, OnnxAttribute.Of("axis", 1L));
                        break;
                    case FlattenLayer:
                        x = Node("Flatten", path, new[] { x }, OnnxAttribute.Of("axis", 1L));
                        break;
                    case LinearLayer linear:
                        {
                            var inputs = new List<string> { x, _graph.AddFloats(path + ".weight", Floats(_state[path + ".weight"]), new long[] { linear.OutFeatures, linear.InFeatures }) };
                            if (linear.Bias)
                                inputs.Add(_graph.AddFloats(path + ".bias", Floats(_state[path + ".bias"]), new long[] { linear.OutFeatures }));
                            x = Node("Gemm", path, inputs.ToArray(), OnnxAttribute.Of("transB", 1L));
                            break;
                        }
                    case ResidualBlock block:
                        {
                            string body = AddSequence(block.Body, site.InputShape, NetworkWalker.BodyScope(path), x);
                            string shortcut = block.Shortcut.Count == 0 ? x : AddSequence(block.Shortcut, site.InputShape, NetworkWalker.ShortcutScope(path), x);
                            x = Node("Relu", path + ".relu", new[] { Node("Add", path + ".add", new[] { body, shortcut }) });
                            break;
                        }
                    default:
                        throw new NotSupportedException($"Layer '{path}' ({site.Layer.GetType().Name}) has no ONNX translation.");
                }
            }
            return x;
        }

        /// <summary>A convolution or shift layer, with the batch norm <paramref name="norm"/> that follows it (if any) folded in.</summary>
        private string AddKernelLayer(LayerSite site, KernelLayerDefinition layer, BatchNorm2dLayer? norm, string x)
        {
            string path = site.Path;
            Tensor weight = _state[path + ".weight"];
            Tensor? bias = layer.Bias ? _state[path + ".bias"] : null;
            if (norm is not null)
                (weight, bias) = BatchNormFolding.Fold(weight, bias, BatchNormFolding.Affine(_state, site.Scope + norm.Name));
            float[] w = Floats(weight);
            float[]? b = bias is null ? null : Floats(bias);
            int k = layer.KernelSize;
            switch (layer)
            {
                case Conv2dLayer conv:
                    {
                        var inputs = new List<string> { x, _graph.AddFloats(path + ".weight", w, new long[] { conv.OutChannels, conv.InChannels, k, k }) };
                        if (b is not null)
                            inputs.Add(_graph.AddFloats(path + ".bias", b, new long[] { conv.OutChannels }));
                        return Node("Conv", path, inputs.ToArray(), OnnxAttribute.Of("kernel_shape", k, k),
                            OnnxAttribute.Of("strides", conv.Stride, conv.Stride), OnnxAttribute.Of("pads", conv.Padding, conv.Padding, conv.Padding, conv.Padding));
                    }
                case ShiftConv2dLayer shift:
                    return AddSharedShifts(site, shift, x, w, b, ShiftConv2dLayer.GroupedShifts(shift.InChannels, k));
                case ShiftPointwiseConv2dLayer pointwise:
                    {
                        byte[] taps = Bytes(_state[path + ".shift"]);
                        return pointwise.Shared ? AddSharedShifts(site, pointwise, x, w, b, taps) : AddPairShifts(site, pointwise, x, w, b, taps);
                    }
                default:
                    throw new NotSupportedException($"Layer '{path}' ({layer.GetType().Name}) has no ONNX translation.");
            }
        }

        /// <summary>One shift per input channel: per tap, a slice of its channels; then a 1×1 convolution.</summary>
        private string AddSharedShifts(LayerSite site, KernelLayerDefinition layer, string x, float[] weight, float[]? bias, byte[] taps)
        {
            string path = site.Path;
            int inChannels = layer.InChannels, outChannels = layer.OutChannels, k = layer.KernelSize, stride = layer.Stride;
            int[] output = site.OutputShape;
            string padded = Pad(path, x, layer.Padding);
            var parts = new List<string>();
            var order = new List<int>();
            foreach (IGrouping<byte, int> group in Enumerable.Range(0, inChannels).GroupBy(c => taps[c]).OrderBy(g => g.Key))
            {
                int[] channels = group.ToArray();
                int ky = group.Key / k, kx = group.Key % k;
                long endY = ky + (long)(output[1] - 1) * stride + 1, endX = kx + (long)(output[2] - 1) * stride + 1;
                string name = $"{path}.tap{group.Key}";
                bool consecutive = channels[^1] - channels[0] == channels.Length - 1;
                string part = consecutive
                    ? Slice(name, padded, new long[] { channels[0], ky, kx }, new long[] { channels[^1] + 1, endY, endX }, new long[] { 1, 2, 3 }, new long[] { 1, stride, stride })
                    : Slice(name, Node("Gather", name + ".gather", new[] { padded, _graph.AddInt64s(name + ".channels", channels.Select(c => (long)c).ToArray(), new long[] { channels.Length }) }, OnnxAttribute.Of("axis", 1L)),
                        new long[] { ky, kx }, new long[] { endY, endX }, new long[] { 2, 3 }, new long[] { stride, stride });
                parts.Add(part);
                order.AddRange(channels);
            }
            string shifted = parts.Count == 1 ? parts[0] : Node("Concat", path + ".concat", parts.ToArray(), OnnxAttribute.Of("axis", 1L));
            var permuted = new float[weight.Length];
            for (int o = 0; o < outChannels; o++)
                for (int j = 0; j < inChannels; j++)
                    permuted[o * inChannels + j] = weight[o * inChannels + order[j]];
            string kernel = _graph.AddFloats(path + ".weight", permuted, new long[] { outChannels, inChannels, 1, 1 });
            return Pointwise(path, shifted, kernel, bias, outChannels);
        }

        /// <summary>One shift per (output, input) pair: per used tap, a slice of every channel; then a 1×1 convolution whose weight
        /// [out, taps·in] the graph computes from the pairs' weights and tap indices.</summary>
        private string AddPairShifts(LayerSite site, ShiftPointwiseConv2dLayer layer, string x, float[] weight, float[]? bias, byte[] taps)
        {
            string path = site.Path;
            int inChannels = layer.InChannels, outChannels = layer.OutChannels, k = layer.KernelSize, stride = layer.Stride;
            int[] output = site.OutputShape;
            long[] used = taps.Distinct().OrderBy(t => t).Select(t => (long)t).ToArray();
            string padded = Pad(path, x, layer.Padding);
            string[] parts = used.Select(t =>
            {
                long ky = t / k, kx = t % k;
                return Slice($"{path}.tap{t}", padded, new[] { ky, kx }, new[] { ky + (long)(output[1] - 1) * stride + 1, kx + (long)(output[2] - 1) * stride + 1 },
                    new long[] { 2, 3 }, new long[] { stride, stride });
            }).ToArray();
            string shifted = parts.Length == 1 ? parts[0] : Node("Concat", path + ".concat", parts, OnnxAttribute.Of("axis", 1L));

            // kernel[o, u·in + i] = weight[o, i] where pair (o, i) reads tap used[u], else 0.
            string storedTaps = _graph.AddBytes(path + ".shift", taps, new long[] { outChannels, 1, inChannels });
            string pairTaps = Node("Cast", path + ".shift_int64", new[] { storedTaps }, OnnxAttribute.Of("to", OnnxInt64));
            string usedTaps = _graph.AddInt64s(path + ".taps", used, new long[] { 1, used.Length, 1 });
            string selects = Node("Cast", path + ".select", new[] { Node("Equal", path + ".equal", new[] { pairTaps, usedTaps }) }, OnnxAttribute.Of("to", OnnxFloat));
            string weights = _graph.AddFloats(path + ".weight", weight, new long[] { outChannels, 1, inChannels });
            string spread = Node("Mul", path + ".spread", new[] { selects, weights });
            string kernel = Node("Reshape", path + ".kernel", new[] { spread, Int64s(outChannels, used.Length * inChannels, 1, 1) });
            return Pointwise(path, shifted, kernel, bias, outChannels);
        }

        private string Pointwise(string path, string x, string kernel, float[]? bias, int outChannels)
        {
            var inputs = new List<string> { x, kernel };
            if (bias is not null)
                inputs.Add(_graph.AddFloats(path + ".bias", bias, new long[] { outChannels }));
            return Node("Conv", path, inputs.ToArray(), OnnxAttribute.Of("kernel_shape", 1L, 1L));
        }

        private string Pad(string path, string x, int padding)
            => padding == 0 ? x : Node("Pad", path + ".pad", new[] { x, Int64s(0, 0, padding, padding, 0, 0, padding, padding) });

        private string Slice(string name, string x, long[] starts, long[] ends, long[] axes, long[] steps)
            => Node("Slice", name, new[] { x, Int64s(starts), Int64s(ends), Int64s(axes), Int64s(steps) });

        private string Node(string opType, string name, string[] inputs, params OnnxAttribute[] attributes)
        {
            string output = _graph.NewVariable(name);
            _graph.AddNode(opType, inputs, new[] { output }, name, attributes);
            return output;
        }

        /// <summary>A 1-D int64 constant (shapes, pads, slice bounds); equal ones are written once and shared.</summary>
        private string Int64s(params long[] values)
        {
            string key = string.Join("_", values);
            if (!_constants.TryGetValue(key, out string? variable))
            {
                variable = _graph.AddInt64s("int64s." + key, values, new long[] { values.Length });
                _constants.Add(key, variable);
            }
            return variable;
        }

        private static float[] Floats(Tensor tensor) => tensor.detach().cpu().to_type(ScalarType.Float32).contiguous().data<float>().ToArray();

        private static byte[] Bytes(Tensor tensor) => tensor.detach().cpu().contiguous().data<byte>().ToArray();
    }
}
