// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>
    /// The one <see cref="ImageClassificationTransformer"/> inside a trained model — the classifier itself or a
    /// (possibly nested) transformer chain, fresh from <c>Fit</c> or from <c>mlContext.Model.Load</c> — with the
    /// transformers that run before and after it, and a way to put another classifier in its place.
    /// </summary>
    /// <remarks>
    /// ML.NET glue: walking a chain needs its scopes, which ML.NET keeps internal (<see cref="MLNetInternals.TryGetChain"/>).
    /// The pruners and <see cref="TrainedModelExtensions.GetSummary(ITransformer)"/> find the classifier through it.
    /// </remarks>
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
            // Every pruner and summary reaches libtorch through here: fail with the real cause if its shim cannot load.
            Native.TorchSharpNativeLibrary.EnsureLoaded();
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
                    $"The model contains {classifiers.Count} image classifiers; pass a model with exactly one (the chain or the classifier you mean).",
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
