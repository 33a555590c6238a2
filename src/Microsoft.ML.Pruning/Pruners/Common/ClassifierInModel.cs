// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.MLNet;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>
    /// The one <see cref="ImageClassificationTransformer"/> inside a trained model — the classifier itself or a
    /// (possibly nested) transformer chain, fresh from <c>Fit</c> or from <c>mlContext.Model.Load</c> — with the
    /// transformers that run before and after it, and a way to put another classifier in its place.
    /// </summary>
    internal sealed class ClassifierInModel
    {
        private readonly ITransformer _model;

        private ClassifierInModel(ITransformer model, ImageClassificationTransformer classifier, IReadOnlyList<ITransformer> flattened)
        {
            _model = model;
            Classifier = classifier;
            Flattened = flattened;
            int index = flattened.ToList().IndexOf(classifier);
            Before = flattened.Take(index).ToArray();
        }

        public ImageClassificationTransformer Classifier { get; }

        /// <summary>The transformers of the model in the order they run (chains flattened).</summary>
        public IReadOnlyList<ITransformer> Flattened { get; }

        /// <summary>The transformers that run before the classifier (e.g. MapValueToKey, ExtractPixels).</summary>
        public IReadOnlyList<ITransformer> Before { get; }

        /// <summary>Finds the classifier; throws <see cref="ArgumentException"/> when there is none or more than one.</summary>
        public static ClassifierInModel Find(ITransformer model, string parameterName)
        {
            ArgumentNullException.ThrowIfNull(model, parameterName);
            var flattened = new List<ITransformer>();
            Flatten(model, flattened);
            var classifiers = flattened.OfType<ImageClassificationTransformer>().ToList();
            if (classifiers.Count == 0)
            {
                string found = string.Join(", ", flattened.Select(t => t.GetType().Name).DefaultIfEmpty(model.GetType().Name));
                throw new ArgumentException(
                    $"The model is not a model trained by Microsoft.ML.Pruning: it contains no {nameof(ImageClassificationTransformer)} (it has {found}). " +
                    "Pass the model returned by a pipeline with mlContext.MulticlassClassification.Trainers.ImageClassifier, or that model loaded with mlContext.Model.Load.",
                    parameterName);
            }
            if (classifiers.Count > 1)
            {
                throw new ArgumentException(
                    $"The model contains {classifiers.Count} image classifiers; a pruner needs a model with exactly one. Pass the chain or classifier to prune.",
                    parameterName);
            }
            return new ClassifierInModel(model, classifiers[0], flattened);
        }

        /// <summary>Runs <paramref name="data"/> through the transformers before the classifier.</summary>
        public IDataView TransformBefore(IDataView data)
        {
            foreach (ITransformer transformer in Before)
                data = transformer.Transform(data);
            return data;
        }

        /// <summary>A model of the same shape as the original with <paramref name="replacement"/> in the classifier's place.</summary>
        public ITransformer WithClassifier(ImageClassificationTransformer replacement) => Replace(_model, replacement);

        private ITransformer Replace(ITransformer model, ImageClassificationTransformer replacement)
        {
            if (ReferenceEquals(model, Classifier))
                return replacement;
            if (!MLNetInternals.TryGetChain(model, out ITransformer[] transformers, out var scopes))
                return model;
            return MLNetInternals.CreateChainLike(model, transformers.Select(t => Replace(t, replacement)).ToArray(), scopes);
        }

        private static void Flatten(ITransformer model, List<ITransformer> into)
        {
            if (MLNetInternals.TryGetChain(model, out ITransformer[] transformers, out _))
            {
                foreach (ITransformer transformer in transformers)
                    Flatten(transformer, into);
            }
            else
            {
                into.Add(model);
            }
        }
    }
}
