// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Reports;

namespace Microsoft.ML
{
    /// <summary>
    /// The image classifier, and its summary, of any model this library returns, whatever chain holds the classifier:
    /// the chain from <c>Fit</c> (nested chains too), a pruner's <c>Fit</c>, <c>mlContext.Model.Load</c>, or the
    /// classifier itself.
    /// </summary>
    public static class TrainedModelExtensions
    {
        /// <summary>
        /// The layers, parameters, non-zero parameters, multiply-accumulates and serialized size of the image classifier
        /// inside <paramref name="model"/>.
        /// </summary>
        /// <param name="model">A trained model that contains exactly one image classifier of this library.</param>
        /// <returns>The summary of that classifier's network.</returns>
        /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
        /// <exception cref="ArgumentException">The model contains no image classifier of this library (the message lists
        /// what it contains), or more than one.</exception>
        public static ModelSummary GetSummary(this ITransformer model)
            => ClassifierInModel.Find(model, nameof(model)).Classifier.GetSummary();

        /// <summary>The one image classifier inside <paramref name="model"/> (its network, class names, column names).</summary>
        /// <param name="model">A trained model that contains exactly one image classifier of this library.</param>
        /// <returns>The classifier; it belongs to the model (disposing the model's transformers disposes it).</returns>
        /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
        /// <exception cref="ArgumentException">The model contains no image classifier of this library, or more than one.</exception>
        public static ImageClassificationTransformer GetImageClassifier(this ITransformer model)
            => ClassifierInModel.Find(model, nameof(model)).Classifier;
    }
}
