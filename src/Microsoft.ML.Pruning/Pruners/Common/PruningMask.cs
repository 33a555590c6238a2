// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>
    /// Which weights survive pruning: per parameter name, a boolean tensor of the parameter's shape, true where the
    /// weight is kept. Parameters without an entry are kept whole. Owns its tensors.
    /// </summary>
    internal sealed class PruningMask : IDisposable
    {
        private readonly Dictionary<string, Tensor> _kept = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> _pruned = new(StringComparer.Ordinal);

        /// <summary>Channels to remove, when the method removes channels (the compaction stage takes them out).</summary>
        public ChannelSelection? Channels { get; private set; }

        /// <summary>Conv2d layers (by path) that the compaction stage turns into kernel-sparse layers holding the kernels their
        /// weight masks keep; their masks then go, the pruned kernels being gone.</summary>
        public ISet<string> KernelSparseLayers { get; } = new HashSet<string>(StringComparer.Ordinal);

        /// <summary>Asks the compaction stage to keep only <paramref name="selection"/>'s channels.</summary>
        public void RemoveChannels(ChannelSelection selection) => Channels = selection;

        /// <summary>After channel removal: the weight masks sliced like the weights, and no channels left to remove.</summary>
        public void SliceTo(ChannelSelection selection, NetworkDefinition original)
        {
            if (_kept.Count > 0)
            {
                using var scope = NewDisposeScope();
                var (_, sliced) = ChannelSurgery.Slice(original, _kept, selection);
                foreach (var (name, value) in sliced.ToList())
                {
                    if (!ReferenceEquals(value, _kept[name]))
                        Set(name, value);
                }
            }
            Channels = null;
        }

        /// <summary>The parameters that have a mask.</summary>
        public IEnumerable<string> Names => _kept.Keys;

        /// <summary>Sets the mask of <paramref name="parameterName"/> (copied, so the caller keeps ownership of <paramref name="kept"/>).</summary>
        public void Set(string parameterName, Tensor kept)
        {
            if (kept.dtype != ScalarType.Bool)
                throw new ArgumentException($"The mask of '{parameterName}' must be boolean; it is {kept.dtype}.", nameof(kept));
            Remove(parameterName);
            _kept[parameterName] = kept.detach().clone().DetachFromDisposeScope();
            _pruned[parameterName] = kept.logical_not().DetachFromDisposeScope();
        }

        /// <summary>The mask of <paramref name="parameterName"/> (owned by this mask), or null when it is kept whole.</summary>
        public Tensor? Get(string parameterName) => _kept.TryGetValue(parameterName, out Tensor? kept) ? kept : null;

        /// <summary>Kept elements of <paramref name="parameterName"/>'s mask.</summary>
        public long Kept(string parameterName)
        {
            using var count = _kept[parameterName].count_nonzero();
            return count.item<long>();
        }

        /// <summary>
        /// Writes +0 into every pruned weight of <paramref name="network"/> (not <c>w·0</c>, which gives −0 for negative
        /// weights and would then be stored as a value).
        /// </summary>
        public void Apply(ClassifierNetwork network)
        {
            var parameters = network.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
            using var noGrad = no_grad();
            foreach (string name in _pruned.Keys.ToList())
            {
                if (!parameters.TryGetValue(name, out var parameter))
                    throw new InvalidOperationException($"The mask names '{name}', which the network does not have.");
                Tensor pruned = _pruned[name];
                if (pruned.device != parameter.device)
                {
                    _pruned[name] = pruned.to(parameter.device).DetachFromDisposeScope();
                    pruned.Dispose();
                }
                parameter.masked_fill_(_pruned[name], HeldScalars.Of(0));
            }
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            foreach (Tensor t in _kept.Values.Concat(_pruned.Values))
                t.Dispose();
            _kept.Clear();
            _pruned.Clear();
        }

        /// <summary>Drops the mask of <paramref name="parameterName"/> (the parameter is then kept whole).</summary>
        public void Remove(string parameterName)
        {
            if (_kept.Remove(parameterName, out Tensor? kept))
                kept.Dispose();
            if (_pruned.Remove(parameterName, out Tensor? pruned))
                pruned.Dispose();
        }
    }
}
