// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>channels</c>: the small VGG and ResNet-20 trained with the <c>train</c> recipe (and, for network
    /// slimming, with its batch-norm scale penalty), pruned to 2× and 4× fewer multiply-accumulates by L1-filter, slimming
    /// and random channel selection, each fine-tuned with the same budget.
    /// </summary>
    internal static class ChannelsScenario
    {
        /// <summary>The slimming penalty λ of the sparsity-trained models (the paper's VGG value).</summary>
        internal const double SlimmingPenalty = 1e-4;

        public static int Run(string[] args)
        {
            bool quick = args.Contains("--quick");
            bool denseOnly = args.Contains("--dense-only");
            var architectures = ParseModels(args);
            int trainRows = quick ? 4000 : 60000, testRows = quick ? 1000 : 10000;
            foreach (ImageClassifierArchitecture architecture in architectures)
            {
                var ml = new MLContext(seed: 1);
                IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, trainRows));
                foreach (bool slimming in new[] { false, true })
                    DenseModel(ml, train, architecture, slimming, quick);
            }
            if (denseOnly)
                return 0;
            throw new NotSupportedException("only --dense-only so far");
        }

        /// <summary>
        /// The trained model (<paramref name="slimming"/>: trained with the batch-norm scale penalty), from
        /// artifacts/bench/models when an earlier run saved it, else trained with the <c>train</c> recipe and saved there.
        /// </summary>
        internal static ITransformer DenseModel(MLContext ml, IDataView train, ImageClassifierArchitecture architecture, bool slimming, bool quick)
        {
            string directory = Path.Combine("artifacts", "bench", "models");
            Directory.CreateDirectory(directory);
            string zip = Path.Combine(directory, $"channels-{Architectures.ShortName(architecture)}-{(slimming ? "slimming" : "dense")}{(quick ? "-quick" : "")}.zip");
            if (File.Exists(zip))
            {
                Console.WriteLine($"== {Architectures.ShortName(architecture)} {(slimming ? "sparsity-trained" : "dense")}: loaded {zip}");
                return ml.Model.Load(zip, out _);
            }
            Console.WriteLine($"== {Architectures.ShortName(architecture)} {(slimming ? "sparsity-trained" : "dense")}: training");
            ImageClassifierTrainer.Options recipe = TrainScenario.Recipe(architecture, quick);
            if (slimming)
                recipe.BatchNormScaleL1 = SlimmingPenalty;
            recipe.EpochCompleted = metrics => Console.WriteLine("  " + metrics);
            var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(recipe))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            ITransformer model = pipeline.Fit(train);
            ml.Model.Save(model, train.Schema, zip);
            return model;
        }

        private static IReadOnlyList<ImageClassifierArchitecture> ParseModels(string[] args)
        {
            int index = Array.IndexOf(args, "--models");
            if (index < 0 || index + 1 >= args.Length)
                return new[] { ImageClassifierArchitecture.VggSmall, ImageClassifierArchitecture.ResNet20 };
            return args[index + 1].Split(',').Select(name => name switch
            {
                "vgg-small" => ImageClassifierArchitecture.VggSmall,
                "resnet20" => ImageClassifierArchitecture.ResNet20,
                _ => throw new ArgumentException($"unknown model '{name}'; the channels scenario runs vgg-small and resnet20"),
            }).ToArray();
        }
    }
}
