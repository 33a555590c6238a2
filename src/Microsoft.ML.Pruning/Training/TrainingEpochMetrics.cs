// Licensed under the MIT license.

using System;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>What one training epoch achieved; passed to <see cref="ImageClassifierTrainer.Options.EpochCompleted"/>.</summary>
    /// <param name="Epoch">The epoch just finished, 1-based.</param>
    /// <param name="Epochs">The number of epochs of the run.</param>
    /// <param name="Loss">Mean training cross-entropy of the epoch.</param>
    /// <param name="TrainingAccuracy">Accuracy on the training batches as they were seen (augmented, in training mode).</param>
    /// <param name="ValidationAccuracy">Accuracy on the validation set, when one was given.</param>
    /// <param name="ImagesPerSecond">Training throughput of the epoch.</param>
    /// <param name="LearningRate">The learning rate at the end of the epoch.</param>
    /// <param name="Elapsed">Wall time of the epoch, validation included.</param>
    public sealed record TrainingEpochMetrics(
        int Epoch,
        int Epochs,
        double Loss,
        double TrainingAccuracy,
        double? ValidationAccuracy,
        double ImagesPerSecond,
        double LearningRate,
        TimeSpan Elapsed)
    {
        /// <inheritdoc/>
        public override string ToString()
            => FormattableString.Invariant(
                $"epoch {Epoch}/{Epochs}: loss {Loss:F4}, train accuracy {TrainingAccuracy:P2}{(ValidationAccuracy is double v ? FormattableString.Invariant($", validation accuracy {v:P2}") : "")}, {ImagesPerSecond:F0} images/s, lr {LearningRate:G3}, {Elapsed.TotalSeconds:F1} s");
    }
}
