// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Reports
{
    /// <summary>One layer's line of a <see cref="ModelSummary"/>.</summary>
    /// <param name="Path">Dotted module path, e.g. <c>stage2_0.body.conv1</c>.</param>
    /// <param name="Kind">Layer kind, e.g. <c>Conv2d 3x3 32→64</c>.</param>
    /// <param name="OutputShape">Output shape for one image.</param>
    /// <param name="Parameters">Stored trainable parameters of this layer.</param>
    /// <param name="NonZeroParameters">Parameters that are not exactly zero.</param>
    /// <param name="MultiplyAccumulates">Multiply-accumulates of this layer for one image.</param>
    /// <param name="NonZeroMultiplyAccumulates">Multiply-accumulates with a non-zero weight: what a sparse kernel computes.
    /// Equal to <paramref name="MultiplyAccumulates"/> for layers without pruned weights.</param>
    public sealed record LayerSummary(string Path, string Kind, int[] OutputShape, long Parameters, long NonZeroParameters, long MultiplyAccumulates,
        long NonZeroMultiplyAccumulates);

    /// <summary>
    /// Exact size and cost of a network: parameters, non-zero parameters and multiply-accumulates per layer and
    /// in total, and the size of the serialized network. Pruners prove their compaction with it.
    /// </summary>
    public sealed class ModelSummary
    {
        private ModelSummary(string architecture, ImageShape input, IReadOnlyList<LayerSummary> layers, long serializedBytes)
        {
            Architecture = architecture;
            Input = input;
            Layers = layers;
            SerializedBytes = serializedBytes;
        }

        /// <summary>The architecture name.</summary>
        public string Architecture { get; }

        /// <summary>The input image shape.</summary>
        public ImageShape Input { get; }

        /// <summary>Every layer in execution order (residual blocks followed by their branches' layers).</summary>
        public IReadOnlyList<LayerSummary> Layers { get; }

        /// <summary>Total stored trainable parameters.</summary>
        public long Parameters => Layers.Sum(l => l.Parameters);

        /// <summary>Total non-zero parameters.</summary>
        public long NonZeroParameters => Layers.Sum(l => l.NonZeroParameters);

        /// <summary>Total multiply-accumulates for one image.</summary>
        public long MultiplyAccumulates => Layers.Sum(l => l.MultiplyAccumulates);

        /// <summary>Total multiply-accumulates with a non-zero weight for one image (unstructured pruning lowers this one).</summary>
        public long NonZeroMultiplyAccumulates => Layers.Sum(l => l.NonZeroMultiplyAccumulates);

        /// <summary>Bytes of the serialized network (definition and weights) as a model file stores it.</summary>
        public long SerializedBytes { get; }

        /// <summary>Summarizes <paramref name="network"/>.</summary>
        public static ModelSummary Create(ClassifierNetwork network)
        {
            ArgumentNullException.ThrowIfNull(network);
            var parameters = network.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
            List<LayerSummary> rows = Rows(network.Definition, parameters);
            return new ModelSummary(network.Definition.Architecture, network.Definition.Input, rows, SerializedSize(network));
        }

        /// <summary>A plain-text table of the layers and totals.</summary>
        public override string ToString()
        {
            var text = new StringBuilder();
            text.AppendLine(CultureInfo.InvariantCulture, $"{Architecture}, input {Input}");
            text.AppendLine(CultureInfo.InvariantCulture, $"{"layer",-28} {"kind",-26} {"output",-12} {"params",10} {"non-zero",10} {"MACs",12} {"non-zero MACs",14}");
            foreach (LayerSummary layer in Layers.Where(l => l.Parameters > 0 || l.MultiplyAccumulates > 0))
            {
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"{layer.Path,-28} {layer.Kind,-26} {string.Join("x", layer.OutputShape),-12} {layer.Parameters,10:N0} {layer.NonZeroParameters,10:N0} {layer.MultiplyAccumulates,12:N0} {layer.NonZeroMultiplyAccumulates,14:N0}");
            }
            text.AppendLine(CultureInfo.InvariantCulture,
                $"{"total",-28} {"",-26} {"",-12} {Parameters,10:N0} {NonZeroParameters,10:N0} {MultiplyAccumulates,12:N0} {NonZeroMultiplyAccumulates,14:N0}");
            text.Append(CultureInfo.InvariantCulture, $"serialized size: {SerializedBytes:N0} bytes");
            return text.ToString();
        }

        private static List<LayerSummary> Rows(NetworkDefinition definition, Dictionary<string, TorchSharp.Modules.Parameter> parameters)
        {
            var rows = new List<LayerSummary>();
            foreach (LayerSite site in NetworkWalker.Walk(definition))
            {
                string path = site.Path;
                LayerDefinition layer = site.Layer;
                long count = 0, nonZero = 0, weights = 0, nonZeroWeights = 0;
                foreach (var (name, parameter) in parameters)
                {
                    if (name.Length <= path.Length + 1 || !name.StartsWith(path + ".", StringComparison.Ordinal) || name.IndexOf('.', path.Length + 1) >= 0)
                        continue;
                    count += parameter.numel();
                    using var noGrad = no_grad();
                    using var nz = parameter.count_nonzero();
                    nonZero += nz.item<long>();
                    if (name.EndsWith(".weight", StringComparison.Ordinal))
                    {
                        weights = parameter.numel();
                        nonZeroWeights = nz.item<long>();
                    }
                }
                long macs = layer is ResidualBlock ? 0 : layer.MultiplyAccumulates(site.InputShape);
                // Every weight of these layers is used the same number of times per image (once per output position).
                long nonZeroMacs = layer is Conv2dLayer or KernelSparseConv2dLayer or LinearLayer or ShiftPointwiseConv2dLayer && weights > 0 && macs % weights == 0
                    ? macs / weights * nonZeroWeights
                    : macs;
                rows.Add(new LayerSummary(path, Describe(layer), site.OutputShape, count, nonZero, macs, nonZeroMacs));
            }
            return rows;
        }

        private static string Describe(LayerDefinition layer) => layer switch
        {
            Conv2dLayer c => $"Conv2d {c.KernelSize}x{c.KernelSize} {c.InChannels}->{c.OutChannels}" + (c.Stride > 1 ? $" /{c.Stride}" : ""),
            KernelSparseConv2dLayer k => $"KernelSparse {k.KernelSize}x{k.KernelSize} {k.InChannels}->{k.OutChannels} ({k.Connections}c)" + (k.Stride > 1 ? $" /{k.Stride}" : ""),
            LinearLayer l => $"Linear {l.InFeatures}->{l.OutFeatures}",
            ShiftAttentionConv2dLayer s => $"ShiftAttn{(s.Shared ? "/sh" : "")}{(s.Hardened ? "/hard" : "")} {s.KernelSize}x{s.KernelSize} {s.InChannels}->{s.OutChannels}" + (s.Stride > 1 ? $" /{s.Stride}" : ""),
            ShiftConv2dLayer s => $"Shift {s.KernelSize}x{s.KernelSize}+1x1 {s.InChannels}->{s.OutChannels}" + (s.Stride > 1 ? $" /{s.Stride}" : ""),
            ShiftPointwiseConv2dLayer s => $"ShiftPW{(s.Shared ? "/sh" : "")} {s.KernelSize}x{s.KernelSize} {s.InChannels}->{s.OutChannels}" + (s.Stride > 1 ? $" /{s.Stride}" : ""),
            BatchNorm2dLayer b => $"BatchNorm2d {b.Channels}",
            MaxPool2dLayer p => $"MaxPool2d {p.KernelSize}",
            ResidualBlock r => r.Shortcut.Count == 0 ? "Residual (identity)" : "Residual (projection)",
            _ => layer.GetType().Name.Replace("Layer", "", StringComparison.Ordinal),
        };

        private static long SerializedSize(ClassifierNetwork network)
        {
            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
            {
                writer.Write(network.Definition.ToJson());
                network.SaveWeights(writer);
            }
            return stream.Length;
        }
    }
}
