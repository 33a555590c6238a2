// Licensed under the MIT license.

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>How the attention of each (output, input) pair becomes a single shift at the end of training.</summary>
    public enum AttentionHardening
    {
        /// <summary>Keep the tap of highest attention: exactly one shift per pair (the rule the paper states).</summary>
        ArgMax,

        /// <summary>Keep the taps whose attention exceeds 0.5, as the reference code rounds it: at most one per pair, and a
        /// pair whose attention is still spread out loses its connection (weight 0).</summary>
        Round,
    }
}
