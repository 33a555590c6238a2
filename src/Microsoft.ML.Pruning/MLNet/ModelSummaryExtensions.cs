// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Reports;

namespace Microsoft.ML
{
    /// <summary>The model summary of any model this library returns, whatever chain holds its classifier.</summary>
    public static class ModelSummaryExtensions
    {
        /// <summary>
        /// The layers, parameters, non-zero parameters, multiply-accumulates and serialized size of the image classifier
        /// inside <paramref name="model"/>: the chain returned by <c>Fit</c> (nested chains too), by a pruner's <c>Fit</c>,
        /// by <c>mlContext.Model.Load</c>, or the classifier itself.
        /// </summary>
        /// <param name="model">A trained model that contains exactly one image classifier of this library.</param>
        /// <returns>The summary of that classifier's network.</returns>
        /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
        /// <exception cref="ArgumentException">The model contains no image classifier of this library (the message lists
        /// what it contains), or more than one.</exception>
        public static ModelSummary GetSummary(this ITransformer model)
            => ClassifierInModel.Find(model, nameof(model)).Classifier.GetSummary();
    }
}
