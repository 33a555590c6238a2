// Licensed under the MIT license.

using System;

namespace Microsoft.ML.Pruning.Pruners
{
    /// <summary>The state of the attention after one training epoch; passed to
    /// <see cref="ShiftAttentionTrainer.Options.AttentionEpochCompleted"/>.</summary>
    /// <param name="Epoch">The epoch just finished, 1-based.</param>
    /// <param name="Epochs">The number of epochs of the run.</param>
    /// <param name="Temperature">The inverse temperature <c>T</c> after the epoch's last step.</param>
    /// <param name="MeanMaxProbability">The largest attention probability of each pair (or input channel, when shared),
    /// averaged over all shift attention layers: 1 when every distribution is one-hot, 1/k² when uniform.</param>
    public sealed record ShiftAttentionEpochMetrics(int Epoch, int Epochs, double Temperature, double MeanMaxProbability)
    {
        /// <inheritdoc/>
        public override string ToString()
            => FormattableString.Invariant($"epoch {Epoch}/{Epochs}: temperature {Temperature:G4}, attention mean max-probability {MeanMaxProbability:F4}");
    }
}
