// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Discrimination
{
    /// <summary>An auxiliary classifier of discrimination-aware pruning: batch norm → ReLU → global average pool → linear.</summary>
    internal sealed class AuxiliaryHead : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.BatchNorm2d bn;
        private readonly TorchSharp.Modules.Linear fc;

        public AuxiliaryHead(string name, int channels, int classes) : base(name)
        {
            bn = nn.BatchNorm2d(channels, eps: NetworkModules.BatchNormEpsilon);
            fc = nn.Linear(channels, classes);
            RegisterComponents();
        }

        /// <summary>Input channels.</summary>
        public long Channels => fc.in_features;

        /// <summary>Classes.</summary>
        public long Classes => fc.out_features;

        public override Tensor forward(Tensor input) => fc.call(bn.call(input).relu().mean(new long[] { 2, 3 }));

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                bn.Dispose();
                fc.Dispose();
            }
            base.Dispose(disposing);
        }
    }

    /// <summary>
    /// Auxiliary classifiers attached to a network's top-level layers, and the forward pass that feeds them: the network's
    /// top-level layers run one after another, and the activation after each tap goes to its head.
    /// </summary>
    internal sealed class AuxiliaryClassifiers : IDisposable
    {
        private readonly nn.Module<Tensor, Tensor>[] _layers;

        private AuxiliaryClassifiers(ClassifierNetwork network, IReadOnlyList<int> taps, IReadOnlyList<AuxiliaryHead> heads)
        {
            _layers = network.Module.named_children().Select(c => (nn.Module<Tensor, Tensor>)c.module).ToArray();
            Taps = taps;
            Heads = heads;
        }

        /// <summary>The top-level layer index after which each head reads, ascending.</summary>
        public IReadOnlyList<int> Taps { get; }

        /// <summary>The heads, one per tap.</summary>
        public IReadOnlyList<AuxiliaryHead> Heads { get; }

        /// <summary>The heads' parameters.</summary>
        public IReadOnlyList<TorchSharp.Modules.Parameter> Parameters => Heads.SelectMany(h => h.parameters()).ToArray();

        /// <summary>Heads after the top-level layers <paramref name="taps"/> of <paramref name="network"/> (on its device).</summary>
        public static AuxiliaryClassifiers Create(ClassifierNetwork network, IReadOnlyList<int> taps)
        {
            var sites = NetworkWalker.Walk(network.Definition).Where(s => s.Scope.Length == 0).ToArray();
            var heads = new List<AuxiliaryHead>();
            foreach (int tap in taps)
            {
                int[] shape = sites[tap].OutputShape;
                if (shape.Length != 3)
                    throw new InvalidOperationException($"An auxiliary classifier needs a [C,H,W] activation; layer '{sites[tap].Path}' writes [{string.Join(",", shape)}].");
                var head = new AuxiliaryHead($"aux{heads.Count + 1}", shape[0], network.Definition.Classes);
                head.to(network.Device);
                heads.Add(head);
            }
            return new AuxiliaryClassifiers(network, taps, heads);
        }

        /// <summary>
        /// Runs the top-level layers up to <paramref name="last"/> (inclusive; the whole network when it is the last index)
        /// and returns the activation there with the heads' logits for the taps on the way (null for a head not reached).
        /// </summary>
        public (Tensor Output, Tensor?[] HeadLogits) Forward(Tensor images, int last) => Forward(images, 0, last);

        /// <summary>
        /// Runs the top-level layers <paramref name="first"/> to <paramref name="last"/> (inclusive) on
        /// <paramref name="input"/>, the input of layer <paramref name="first"/>, and returns the activation after
        /// <paramref name="last"/> with the logits of the heads whose taps lie in that range (null for the others).
        /// </summary>
        public (Tensor Output, Tensor?[] HeadLogits) Forward(Tensor input, int first, int last)
        {
            Tensor x = input;
            var logits = new Tensor?[Heads.Count];
            for (int i = first; i <= last; i++)
            {
                x = _layers[i].call(x);
                int head = IndexOf(i);
                if (head >= 0)
                    logits[head] = Heads[head].call(x);
            }
            return (x, logits);
        }

        /// <summary>The input of top-level layer <paramref name="index"/> for <paramref name="images"/>: the layers before it, run.</summary>
        public Tensor InputOf(Tensor images, int index)
        {
            Tensor x = images;
            for (int i = 0; i < index; i++)
                x = _layers[i].call(x);
            return x;
        }

        /// <summary>The index of the last top-level layer.</summary>
        public int Last => _layers.Length - 1;

        /// <summary>Switches the heads to training or evaluation mode.</summary>
        public void Train(bool training)
        {
            foreach (AuxiliaryHead head in Heads)
                head.train(training);
        }

        private int IndexOf(int layer)
        {
            for (int h = 0; h < Taps.Count; h++)
            {
                if (Taps[h] == layer)
                    return h;
            }
            return -1;
        }

        public void Dispose()
        {
            foreach (AuxiliaryHead head in Heads)
                head.Dispose();
        }
    }
}
