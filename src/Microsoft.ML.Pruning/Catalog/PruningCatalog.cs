// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;

namespace Microsoft.ML
{
    /// <summary>The ML.NET catalog extensions of Microsoft.ML.Pruning (one partial file per trainer or pruner).</summary>
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates an <see cref="ImageClassifierTrainer"/> that trains a TorchSharp image classifier.
        /// </summary>
        /// <param name="catalog">The multiclass classification trainers catalog.</param>
        /// <param name="labelColumnName">The label column, a key type.</param>
        /// <param name="featureColumnName">The image column, <c>Vector&lt;Single, C, H, W&gt;</c>.</param>
        /// <param name="architecture">The network to train.</param>
        /// <param name="epochs">Passes over the training data.</param>
        /// <param name="batchSize">Images per optimizer step.</param>
        /// <param name="validationSet">Optional data whose accuracy is logged after every epoch.</param>
        /// <example>
        /// <code>
        /// var pipeline = mlContext.Transforms.Conversion.MapValueToKey("Label")
        ///     .Append(mlContext.MulticlassClassification.Trainers.ImageClassifier(architecture: ImageClassifierArchitecture.VggSmall))
        ///     .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        /// </code>
        /// </example>
        public static ImageClassifierTrainer ImageClassifier(
            this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
            string labelColumnName = Microsoft.ML.Pruning.DefaultColumnNames.Label,
            string featureColumnName = Microsoft.ML.Pruning.DefaultColumnNames.Features,
            ImageClassifierArchitecture architecture = ImageClassifierArchitecture.LeNet5,
            int epochs = 10,
            int batchSize = 128,
            IDataView? validationSet = null)
            => ImageClassifier(catalog, new ImageClassifierTrainer.Options
            {
                LabelColumnName = labelColumnName,
                FeatureColumnName = featureColumnName,
                Architecture = architecture,
                Epochs = epochs,
                BatchSize = batchSize,
                ValidationSet = validationSet,
            });

        /// <summary>Creates an <see cref="ImageClassifierTrainer"/> with advanced options.</summary>
        /// <param name="catalog">The multiclass classification trainers catalog.</param>
        /// <param name="options">The trainer options; validated here.</param>
        public static ImageClassifierTrainer ImageClassifier(
            this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
            ImageClassifierTrainer.Options options)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentNullException.ThrowIfNull(options);
            return new ImageClassifierTrainer(MLNetInternals.GetEnvironment(catalog), options);
        }
    }
}
