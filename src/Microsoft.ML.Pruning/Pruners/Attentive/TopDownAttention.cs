// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Threading;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Attentive
{
    /// <summary>The constants of the top-down selection (STNet's defaults).</summary>
    internal sealed record TopDownSettings
    {
        /// <summary>A convolution unit whose contributions sum to no more than this propagates nothing.</summary>
        public double ConvolutionLowerBound { get; init; } = 3e-4;

        /// <summary>Slack below θ for the marked positions of a convolution unit.</summary>
        public double ConvolutionEpsilon { get; init; } = 2e-4;

        /// <summary>A fully connected unit whose contributions sum to no more than this propagates nothing.</summary>
        public double LinearLowerBound { get; init; } = 1e-5;

        /// <summary>Slack below θ for the marked inputs of a fully connected unit.</summary>
        public double LinearEpsilon { get; init; } = 1e-4;

        /// <summary>The weight of a component's contribution sum in its score (the rest weighs its size).</summary>
        public double ComponentSumWeight { get; init; } = 0.2;

        /// <summary>Rows of the policy table stepped past the first that selects, for fully connected layers.</summary>
        public int LinearOffset { get; init; } = 3;

        /// <summary>The same for the first fully connected layer after the convolutions (the "bridge").</summary>
        public int BridgeOffset { get; init; } = 1;

        /// <summary>Start from the predicted class instead of the label.</summary>
        public bool FromPrediction { get; init; }

        /// <summary>Also gate the other classes negatively (their probabilities, normalized to sum to −1).</summary>
        public bool SuppressCompetitors { get; init; }

        /// <summary>Also select each gated unit's strongest inhibitory connections (scored, not propagated).</summary>
        public bool Inhibitory { get; init; }

        /// <summary>Images per bottom-up batch.</summary>
        public int ImagesPerBatch { get; init; } = 128;

        /// <summary>Contributions handled at once, in elements (gated units × receptive field).</summary>
        public long ChunkElements { get; init; } = 1 << 22;
    }

    /// <summary>
    /// The top-down attention pass (Biparva and Tsotsos; Selective Tuning as implemented by STNet) over a network, and what
    /// it leaves behind: for every weight of every Linear and Conv2d layer, its gating mass (the sum over all selections of
    /// its share of its unit's selected contributions) and its hits (how often it was selected), accumulated over images.
    /// </summary>
    /// <remarks>
    /// Per image: a bottom-up pass keeps every layer's input; the output unit of the image's class (or predicted class) is
    /// gated with 1. Layer by layer downwards, every gated unit's contributions s_q = w_q·h_q (a following batch norm's
    /// scale folded in, bias excluded) are thresholded by winner-take-all (<see cref="ConnectionSelection.Threshold"/>),
    /// reduced to the best connected component of one input channel (convolutions) or by the "699" policy (fully connected),
    /// and the gating flows to the selected inputs in proportion to their contributions. Max pooling routes to the arg-max,
    /// ReLU, batch norm and flatten pass it through, global average pooling and residual sums split it by the (positive)
    /// shares of their inputs. All gated units of a batch of images are handled together, in chunks.
    /// </remarks>
    internal sealed class TopDownAttention : IDisposable
    {
        private readonly Tensor[] _mass;
        private readonly Tensor[] _hits;
        private readonly Tensor[] _flow;

        private TopDownAttention(Tensor[] mass, Tensor[] hits, Tensor[] flow, long images, TimeSpan elapsed)
        {
            _mass = mass;
            _hits = hits;
            _flow = flow;
            Images = images;
            Elapsed = elapsed;
        }

        /// <summary>Images the pass ran on.</summary>
        public long Images { get; }

        /// <summary>Wall time of the pass (bottom-up and top-down).</summary>
        public TimeSpan Elapsed { get; }

        /// <summary>Images per second of the pass.</summary>
        public double ImagesPerSecond => Images / Math.Max(Elapsed.TotalSeconds, 1e-9);

        /// <summary>Gating mass of layer <paramref name="index"/>'s weights (weight-shaped, float64; owned by this object).</summary>
        public Tensor Mass(int index) => _mass[index];

        /// <summary>Hit counts of layer <paramref name="index"/>'s weights (weight-shaped, float64; owned by this object).</summary>
        public Tensor Hits(int index) => _hits[index];

        /// <summary>
        /// Gating flow of layer <paramref name="index"/>'s weights: like the mass, with each share weighted by its unit's
        /// gating, so that every layer carries about one unit of flow per image (weight-shaped, float64; owned by this object).
        /// </summary>
        public Tensor Flow(int index) => _flow[index];

        /// <summary>Throws a <see cref="NotSupportedException"/> naming the first layer of <paramref name="definition"/> the pass cannot route through.</summary>
        public static void CheckSupported(NetworkDefinition definition)
        {
            foreach (var (path, layer) in definition.Flatten())
            {
                if (layer is not (LinearLayer or Conv2dLayer or ReluLayer or BatchNorm2dLayer or MaxPool2dLayer or FlattenLayer or NormalizeLayer
                    or GlobalAvgPoolLayer or ResidualBlock))
                {
                    throw new NotSupportedException(
                        $"Attentive pruning has no top-down routing through layer '{path}' ({layer.GetType().Name}) of this {definition.Architecture} model; it supports Linear, Conv2d, batch norm, ReLU, max and global average pooling, flatten and residual blocks.");
                }
            }
        }

        /// <summary>Runs the pass over <paramref name="images"/> (with <paramref name="labels"/>, unless the settings start from the prediction).</summary>
        public static TopDownAttention Run(ClassifierNetwork network, IReadOnlyList<PrunableLayer> layers, Tensor images, Tensor? labels,
            TopDownSettings settings, CancellationToken cancellationToken)
        {
            CheckSupported(network.Definition);
            if (labels is null && !settings.FromPrediction)
                throw new ArgumentNullException(nameof(labels), "The top-down pass starts from the labels unless it starts from the prediction.");
            var clock = Stopwatch.StartNew();
            var mass = layers.Select(l => zeros(l.Weight.shape, dtype: float64, device: network.Device).DetachFromDisposeScope()).ToArray();
            var hits = layers.Select(l => zeros(l.Weight.shape, dtype: float64, device: network.Device).DetachFromDisposeScope()).ToArray();
            var flow = layers.Select(l => zeros(l.Weight.shape, dtype: float64, device: network.Device).DetachFromDisposeScope()).ToArray();
            try
            {
                var pass = new Pass(network, layers, settings, mass, hits, flow);
                network.Module.eval();
                using var noGrad = no_grad();
                long n = images.shape[0];
                for (long start = 0; start < n; start += settings.ImagesPerBatch)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = NewDisposeScope();
                    long length = Math.Min(settings.ImagesPerBatch, n - start);
                    pass.Run(images.narrow(0, start, length).to(network.Device), labels?.narrow(0, start, length).to(network.Device));
                }
                return new TopDownAttention(mass, hits, flow, n, clock.Elapsed);
            }
            catch
            {
                foreach (Tensor t in mass.Concat(hits).Concat(flow))
                    t.Dispose();
                throw;
            }
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            foreach (Tensor t in _mass.Concat(_hits).Concat(_flow))
                t.Dispose();
        }

        /// <summary>A layer as the bottom-up pass met it: its input, and for a residual block the traces of its branches.</summary>
        private sealed record Step(string Path, LayerDefinition Layer, LayerDefinition? Next, Tensor Input, Tensor Output)
        {
            public List<Step>? Body { get; init; }

            public List<Step>? Shortcut { get; init; }

            public Tensor? BodyOutput { get; init; }

            public Tensor? ShortcutOutput { get; init; }
        }

        /// <summary>One network's pass: the modules by path and the accumulators.</summary>
        private sealed class Pass
        {
            private readonly ClassifierNetwork _network;
            private readonly TopDownSettings _settings;
            private readonly Dictionary<string, nn.Module<Tensor, Tensor>> _modules;
            private readonly Dictionary<string, int> _layerIndex;
            private readonly IReadOnlyList<PrunableLayer> _layers;
            private readonly Tensor[] _mass;
            private readonly Tensor[] _hits;
            private readonly Tensor[] _flow;
            private readonly string _firstLayer;
            private readonly string? _bridge;

            public Pass(ClassifierNetwork network, IReadOnlyList<PrunableLayer> layers, TopDownSettings settings, Tensor[] mass, Tensor[] hits, Tensor[] flow)
            {
                _flow = flow;
                _network = network;
                _settings = settings;
                _layers = layers;
                _mass = mass;
                _hits = hits;
                _modules = network.Module.named_modules().Where(m => m.module is nn.Module<Tensor, Tensor>)
                    .ToDictionary(m => m.name, m => (nn.Module<Tensor, Tensor>)m.module, StringComparer.Ordinal);
                _layerIndex = layers.Select((l, i) => (l.Path, i)).ToDictionary(p => p.Path, p => p.i, StringComparer.Ordinal);
                var flat = network.Definition.Flatten().ToList();
                _firstLayer = flat.First(l => l.Layer is LinearLayer or Conv2dLayer).Path;
                int firstConvolution = flat.FindIndex(l => l.Layer is Conv2dLayer);
                _bridge = firstConvolution < 0 ? null : flat.Skip(firstConvolution).FirstOrDefault(l => l.Layer is LinearLayer).Path;
            }

            public void Run(Tensor images, Tensor? labels)
            {
                var trace = new List<Step>();
                Tensor logits = Up(_network.Definition.Layers, "", images.reshape(images.shape[0], _network.Definition.Input.Channels,
                    _network.Definition.Input.Height, _network.Definition.Input.Width), trace);
                Tensor start = _settings.FromPrediction || labels is null ? logits.argmax(1) : labels.to(int64);
                Tensor gate = zeros_like(logits).scatter_(1, start.unsqueeze(1), ones(start.shape[0], 1, dtype: logits.dtype, device: logits.device));
                if (_settings.SuppressCompetitors)
                {
                    // The other classes, gated by −p/Σp: the connections that hold them down are selected too.
                    Tensor competitors = nn.functional.softmax(logits, 1).masked_fill(gate.gt(HeldScalars.Of(0)), HeldScalars.Of(0));
                    gate = gate.sub(competitors.div(competitors.sum(1, keepdim: true).clamp_min(HeldScalars.Of(1e-12))));
                }
                Down(trace, gate);
            }

            /// <summary>The bottom-up pass through <paramref name="sequence"/>, recording each layer's input.</summary>
            private Tensor Up(IReadOnlyList<LayerDefinition> sequence, string scope, Tensor x, List<Step> trace)
            {
                for (int i = 0; i < sequence.Count; i++)
                {
                    LayerDefinition layer = sequence[i];
                    string path = scope + layer.Name;
                    LayerDefinition? next = i + 1 < sequence.Count ? sequence[i + 1] : null;
                    if (layer is ResidualBlock block)
                    {
                        var body = new List<Step>();
                        var shortcut = new List<Step>();
                        Tensor bodyOutput = Up(block.Body, NetworkWalker.BodyScope(path), x, body);
                        Tensor shortcutOutput = block.Shortcut.Count == 0 ? x : Up(block.Shortcut, NetworkWalker.ShortcutScope(path), x, shortcut);
                        Tensor output = nn.functional.relu(bodyOutput.add(shortcutOutput));
                        trace.Add(new Step(path, layer, next, x, output) { Body = body, Shortcut = shortcut, BodyOutput = bodyOutput, ShortcutOutput = shortcutOutput });
                        x = output;
                        continue;
                    }
                    // ReLU modules work in place; the pass keeps every input, so it applies its own.
                    Tensor y = layer is ReluLayer ? nn.functional.relu(x) : _modules[path].call(x);
                    trace.Add(new Step(path, layer, next, x, y));
                    x = y;
                }
                return x;
            }

            /// <summary>The top-down pass through a recorded sequence: the gating of its output to the gating of its input.</summary>
            private Tensor Down(List<Step> trace, Tensor gate)
            {
                for (int i = trace.Count - 1; i >= 0; i--)
                {
                    Step step = trace[i];
                    gate = step.Layer switch
                    {
                        LinearLayer => Linear(step, gate),
                        Conv2dLayer conv => Convolution(step, conv, gate),
                        MaxPool2dLayer pool => MaxPool(step, pool, gate),
                        FlattenLayer => gate.view(step.Input.shape),
                        GlobalAvgPoolLayer => GlobalAveragePool(step, gate),
                        ResidualBlock => Residual(step, gate),
                        _ => gate, // ReLU, batch norm (its scale is folded into the layer before), normalization
                    };
                    if (step.Path == _firstLayer)
                        break;
                }
                return gate;
            }

            private Tensor Residual(Step step, Tensor gate)
            {
                // relu(body + shortcut): the gating splits by the positive parts of the two summands (the winners of a two-input unit).
                Tensor body = step.BodyOutput!.clamp_min(HeldScalars.Of(0));
                Tensor shortcut = step.ShortcutOutput!.clamp_min(HeldScalars.Of(0));
                Tensor total = body.add(shortcut).clamp_min(HeldScalars.Of(1e-12));
                Tensor below = Down(step.Body!, gate.mul(body).div_(total));
                Tensor shortcutGate = gate.mul(shortcut).div_(total);
                return below.add_(step.Shortcut!.Count == 0 ? shortcutGate : Down(step.Shortcut, shortcutGate));
            }

            private static Tensor MaxPool(Step step, MaxPool2dLayer pool, Tensor gate)
            {
                Tensor input = step.Input;
                var (_, indices) = nn.functional.max_pool2d_with_indices(input, new long[] { pool.KernelSize, pool.KernelSize }, new long[] { pool.KernelSize, pool.KernelSize });
                Tensor below = zeros(input.shape[0], input.shape[1], input.shape[2] * input.shape[3], dtype: gate.dtype, device: gate.device);
                below.scatter_add_(2, indices.flatten(2), gate.flatten(2));
                return below.view(input.shape);
            }

            private static Tensor GlobalAveragePool(Step step, Tensor gate)
            {
                Tensor input = step.Input.clamp_min(HeldScalars.Of(0));
                Tensor total = input.sum(new long[] { 2, 3 }, keepdim: true).clamp_min(HeldScalars.Of(1e-12));
                return input.div(total).mul_(gate.view(gate.shape[0], gate.shape[1], 1, 1));
            }

            private Tensor Linear(Step step, Tensor gate)
            {
                int index = _layerIndex[step.Path];
                Tensor weight = _layers[index].Weight.detach();
                Tensor input = step.Input.reshape(step.Input.shape[0], -1);
                long columns = weight.shape[1];
                bool needBelow = step.Path != _firstLayer;
                Tensor below = zeros(input.shape, dtype: gate.dtype, device: gate.device);
                Tensor units = gate.nonzero(); // [P, 2]: image, unit
                int offset = step.Path == _bridge ? _settings.BridgeOffset : _settings.LinearOffset;
                long chunk = Math.Max(1, _settings.ChunkElements / columns);
                using Scalar lowerBound = _settings.LinearLowerBound.ToScalar();
                for (long start = 0; start < units.shape[0]; start += chunk)
                {
                    using var scope = NewDisposeScope();
                    Tensor part = units.narrow(0, start, Math.Min(chunk, units.shape[0] - start));
                    Tensor image = part.select(1, 0), unit = part.select(1, 1);
                    // A negatively gated unit (a competing class) is held down: its winners are its most negative contributions.
                    Tensor gated = gate.index(new[] { image, unit });
                    Tensor contributions = weight.index_select(0, unit).mul(input.index_select(0, image)).mul_(gated.sign().unsqueeze(1));
                    Tensor active = contributions.sum(1).gt(lowerBound);
                    Tensor marked = ConnectionSelection.Marked(contributions, ConnectionSelection.Threshold(contributions), _settings.LinearEpsilon);
                    Tensor selected = ConnectionSelection.SelectLinear(contributions, marked, offset).logical_and_(active.unsqueeze(1));
                    var (share, excitation) = Share(contributions, selected);
                    Tensor flow = share.mul(gated.abs().unsqueeze(1));
                    Accumulate(index, unit, share, selected, flow);
                    if (needBelow)
                        below.index_add_(0, image, flow, HeldScalars.Of(1));
                    if (_settings.Inhibitory)
                    {
                        Tensor inhibition = contributions.neg().clamp_min_(HeldScalars.Of(0));
                        Tensor inhibitory = ConnectionSelection.SelectLinear(inhibition, inhibition.gt(HeldScalars.Of(0)), offset).logical_and_(active.unsqueeze(1));
                        Tensor inhibitoryShare = inhibition.mul_(inhibitory.to(inhibition.dtype)).div_(excitation);
                        Accumulate(index, unit, inhibitoryShare, inhibitory, inhibitoryShare.mul(gated.abs().unsqueeze(1)));
                    }
                }
                return below.view(step.Input.shape);
            }

            private Tensor Convolution(Step step, Conv2dLayer conv, Tensor gate)
            {
                int index = _layerIndex[step.Path];
                Tensor weight = _layers[index].Weight.detach().reshape(conv.OutChannels, -1);
                if (step.Next is BatchNorm2dLayer && _modules.TryGetValue(ScopeOf(step.Path) + step.Next.Name, out var module)
                    && module is TorchSharp.Modules.BatchNorm2d norm)
                {
                    // The unit's net input as the layer after sees it: the batch norm's scale γ/√(σ²+ε) per output channel.
                    using Scalar epsilon = norm.eps.ToScalar();
                    Tensor scale = norm.weight!.detach().div(norm.running_var!.add(epsilon).sqrt());
                    weight = weight.mul(scale.unsqueeze(1));
                }
                Tensor input = step.Input;
                long images = input.shape[0], columns = weight.shape[1];
                // [N·L, C·k·k]: the receptive fields, in the weight's (C, kh, kw) order.
                Tensor fields = nn.functional.unfold(input, conv.KernelSize, padding: conv.Padding, stride: conv.Stride);
                long positions = fields.shape[2];
                fields = fields.transpose(1, 2).reshape(images * positions, columns);
                bool needBelow = step.Path != _firstLayer;
                Tensor belowFields = needBelow ? zeros(images * positions, columns, dtype: gate.dtype, device: gate.device) : empty(0);
                Tensor units = gate.reshape(images, conv.OutChannels, positions).nonzero(); // [P, 3]: image, channel, position
                long chunk = Math.Max(1, _settings.ChunkElements / columns);
                using Scalar lowerBound = _settings.ConvolutionLowerBound.ToScalar(), positionCount = positions.ToScalar();
                for (long start = 0; start < units.shape[0]; start += chunk)
                {
                    using var scope = NewDisposeScope();
                    Tensor part = units.narrow(0, start, Math.Min(chunk, units.shape[0] - start));
                    Tensor image = part.select(1, 0), channel = part.select(1, 1), position = part.select(1, 2);
                    Tensor field = image.mul(positionCount).add_(position);
                    Tensor gated = gate.view(images, conv.OutChannels, positions).index(new[] { image, channel, position });
                    Tensor contributions = weight.index_select(0, channel).mul(fields.index_select(0, field)).mul_(gated.sign().unsqueeze(1));
                    Tensor active = contributions.sum(1).gt(lowerBound);
                    Tensor marked = ConnectionSelection.Marked(contributions, ConnectionSelection.Threshold(contributions), _settings.ConvolutionEpsilon);
                    Tensor selected = ConnectionSelection.SelectConvolution(contributions, marked, conv.InChannels, conv.KernelSize, _settings.ComponentSumWeight)
                        .logical_and_(active.unsqueeze(1));
                    var (share, excitation) = Share(contributions, selected);
                    Tensor flow = share.mul(gated.abs().unsqueeze(1));
                    Accumulate(index, channel, share, selected, flow);
                    if (needBelow)
                        belowFields.index_add_(0, field, flow, HeldScalars.Of(1));
                    if (_settings.Inhibitory)
                    {
                        Tensor inhibition = contributions.neg().clamp_min_(HeldScalars.Of(0));
                        Tensor inhibitory = ConnectionSelection.SelectConvolution(inhibition, inhibition.gt(HeldScalars.Of(0)), conv.InChannels, conv.KernelSize,
                            _settings.ComponentSumWeight).logical_and_(active.unsqueeze(1));
                        Tensor inhibitoryShare = inhibition.mul_(inhibitory.to(inhibition.dtype)).div_(excitation);
                        Accumulate(index, channel, inhibitoryShare, inhibitory, inhibitoryShare.mul(gated.abs().unsqueeze(1)));
                    }
                }
                if (!needBelow)
                    return gate;
                Tensor folded = belowFields.view(images, positions, columns).transpose(1, 2);
                return nn.functional.fold(folded, (input.shape[2], input.shape[3]), (conv.KernelSize, conv.KernelSize),
                    padding: (conv.Padding, conv.Padding), stride: (conv.Stride, conv.Stride));
            }

            /// <summary>Each selected contribution over the sum of its unit's selected contributions (0 elsewhere), and that sum [P, 1].</summary>
            private static (Tensor Share, Tensor Excitation) Share(Tensor contributions, Tensor selected)
            {
                Tensor kept = contributions.mul(selected.to(contributions.dtype));
                Tensor excitation = kept.sum(1, keepdim: true).clamp_min(HeldScalars.Of(1e-30));
                return (kept.div(excitation), excitation);
            }

            private void Accumulate(int index, Tensor unit, Tensor share, Tensor selected, Tensor flow)
            {
                Scalar one = HeldScalars.Of(1);
                _flow[index].view(_flow[index].shape[0], -1).index_add_(0, unit, flow.to(float64), one);
                long rows = _mass[index].shape[0];
                _mass[index].view(rows, -1).index_add_(0, unit, share.to(float64), one);
                _hits[index].view(rows, -1).index_add_(0, unit, selected.to(float64), one);
            }

            private static string ScopeOf(string path)
            {
                int dot = path.LastIndexOf('.');
                return dot < 0 ? "" : path[..(dot + 1)];
            }
        }
    }
}
