// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;
using Spectre.Console;

namespace FashionMnistClassifier
{
    /// <summary>
    /// What the library is for, on Fashion-MNIST: trains a LeNet-5 inside an ML.NET pipeline, prunes it with each
    /// method of <see cref="PruningMethods"/>, and compares the dense and pruned models side by side (accuracy,
    /// parameters, multiply-accumulates, zip size, latency, throughput, and a plot of accuracy against size); every
    /// model is saved, reloaded in a new <see cref="MLContext"/> and checked to predict as before.
    /// </summary>
    internal static class Program
    {
        /// <summary>Test images predicted one by one with each reloaded model.</summary>
        private const int PreviewCount = 8;

        private static int Main(string[] args)
        {
            // First, before libtorch allocates anything: keep freed memory in the heap (see GlibcMallocTuning).
            bool mallocTuned = GlibcMallocTuning.Apply();

            SampleOptions options;
            try
            {
                options = SampleOptions.Parse(args);
            }
            catch (FormatException ex)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
                Console.WriteLine(SampleOptions.Usage);
                return 1;
            }
            if (options.ShowHelp)
            {
                Console.WriteLine(SampleOptions.Usage);
                return 0;
            }

            AnsiConsole.Write(new Rule("[bold]Fashion-MNIST: train, prune, compare[/]").LeftJustified());
            AnsiConsole.MarkupLineInterpolated(
                $"torch threads: {TorchSharp.torch.get_num_threads()}, glibc malloc tuned: {(mallocTuned ? "yes" : "no")}, progress: {(Progress.Interactive ? "bars" : "lines (not a terminal)")}");
            return Run(options);
        }

        private static int Run(SampleOptions options)
        {
            var total = Stopwatch.StartNew();
            var mlContext = new MLContext(seed: 1);
            string outputDirectory = Path.GetFullPath(options.OutputDirectory);
            Directory.CreateDirectory(outputDirectory);

            // 1. Load the data: columns Label (the class name) and Features (Vector<Single, 1, 28, 28>, 0..1).
            var step = Stopwatch.StartNew();
            IDataView train, test;
            try
            {
                train = FashionMnist.LoadTrain(mlContext, directory: options.DataDirectory);
                test = FashionMnist.LoadTest(mlContext, directory: options.DataDirectory);
            }
            catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
                AnsiConsole.MarkupLine("Install the data set with [bold]bash eng/install-dataset.sh[/] (or run the demo with [bold]bash eng/run-demo.sh[/]).");
                return 1;
            }
            AnsiConsole.MarkupLineInterpolated(
                $"Loaded {train.GetRowCount():N0} training and {test.GetRowCount():N0} test images in {step.Elapsed.TotalSeconds:F1} s.");

            // 2. Train the dense model.
            AnsiConsole.Write(new Rule("Training").LeftJustified());
            step.Restart();
            ITransformer dense = Train(mlContext, train, test, options);
            AnsiConsole.MarkupLineInterpolated($"Trained in {step.Elapsed.TotalSeconds:F1} s.");

            var results = new List<ModelResult>();
            var models = new List<ITransformer> { dense };
            try
            {
                results.Add(Measure(mlContext, "dense", "trained network", dense, train.Schema, test, outputDirectory, null));

                // 3. Prune it with each method; each pruner takes the trained chain and returns a chain of the same shape.
                AnsiConsole.Write(new Rule("Pruning").LeftJustified());
                IReadOnlyList<PruningMethod> methods = PruningMethods.For(options);
                foreach (PruningMethod method in methods)
                {
                    PruningReport? report = null;
                    AnsiConsole.MarkupLineInterpolated($"[bold]{method.Name}[/]: {method.Description}");
                    ITransformer pruned = Progress.Run(method.Name, update =>
                    {
                        update("pruning and retraining");
                        ITransformer model = method.Create(mlContext, dense, r => report = r).Fit(train);
                        update("evaluating, saving, reloading, timing");
                        return model;
                    });
                    models.Add(pruned);
                    results.Add(Measure(mlContext, method.Name, method.Description, pruned, train.Schema, test, outputDirectory, report));
                    if (report is not null)
                    {
                        AnsiConsole.MarkupLineInterpolated(
                            $"{method.Name}: kept {report.KeptWeights:N0} of {report.Weights:N0} weights; pruning {report.PruningTime.TotalSeconds:F1} s, retraining {report.RetrainingTime.TotalSeconds:F1} s.");
                    }
                }

                // 4. Side by side.
                AnsiConsole.Write(new Rule("Dense and pruned, side by side").LeftJustified());
                Console.WriteLine(ResultsTable.Format(results));
                string plot = Path.Combine(outputDirectory, "accuracy-vs-size.png");
                AccuracyPlot.Write(plot, results);
                // Paths go to Console directly: AnsiConsole would wrap them at the terminal width.
                Console.WriteLine($"Plot of accuracy against zip size: {plot}");

                // 5. What pruning left in each layer of the last model, and a few predictions of it reloaded from its zip.
                ModelResult last = results[^1];
                AnsiConsole.Write(new Rule($"Model summary: {last.Name}").LeftJustified());
                Console.WriteLine(models[^1].GetSummary());
                AnsiConsole.Write(new Rule($"Predictions of the reloaded {last.Name} model").LeftJustified());
                PreviewPredictions(mlContext, test, last.ZipPath);

                bool consistent = results.All(r => r.ReloadIdentical);
                if (consistent)
                    AnsiConsole.MarkupLineInterpolated($"[green]Every reloaded model predicts as the model in memory[/] (first {PreviewCount} test images).");
                else
                    AnsiConsole.MarkupLine("[red]A reloaded model disagrees with the model in memory.[/]");
                AnsiConsole.MarkupLineInterpolated($"Total {total.Elapsed.TotalSeconds:F0} s.");
                return consistent ? 0 : 1;
            }
            finally
            {
                foreach (ITransformer model in models)
                    DisposeAll(model);
            }
        }

        /// <summary>
        /// The Model Builder pipeline: class name → key, train the network, predicted key → class name.
        /// A progress bar (or a line, when the output is not a terminal) advances after every epoch.
        /// </summary>
        private static ITransformer Train(MLContext mlContext, IDataView train, IDataView test, SampleOptions options)
        {
            // Every other setting keeps the library default (SGD with Nesterov momentum, cosine schedule, batch 128).
            var trainerOptions = new ImageClassifierTrainer.Options
            {
                Architecture = options.Architecture,
                Epochs = options.Epochs,
            };
            AnsiConsole.MarkupLineInterpolated(
                $"{trainerOptions.Architecture}, {trainerOptions.Epochs} epoch(s), batch {trainerOptions.BatchSize}, {trainerOptions.Optimizer} with learning rate {trainerOptions.LearningRate} ({trainerOptions.LearningRateSchedule} schedule)");

            var labelToKey = mlContext.Transforms.Conversion.MapValueToKey("Label",
                keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue);
            // The trainer reads the validation set as it is, not through the pipeline: give it the steps before the trainer.
            trainerOptions.ValidationSet = labelToKey.Fit(train).Transform(test);

            return Progress.Run($"training {trainerOptions.Architecture}", trainerOptions.Epochs, advance =>
            {
                trainerOptions.EpochCompleted = epoch => advance(FormattableString.Invariant(
                    $"epoch {epoch.Epoch}/{epoch.Epochs}: loss {epoch.Loss:F3}, test accuracy {epoch.ValidationAccuracy ?? epoch.TrainingAccuracy:P2}, {epoch.ImagesPerSecond:N0} images/s"));
                return labelToKey
                    .Append(mlContext.MulticlassClassification.Trainers.ImageClassifier(trainerOptions))
                    .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                    .Fit(train);
            });
        }

        /// <summary>Evaluates, summarizes, saves, reloads and times one model.</summary>
        private static ModelResult Measure(MLContext mlContext, string name, string description, ITransformer model, DataViewSchema inputSchema,
            IDataView test, string outputDirectory, PruningReport? report)
        {
            MulticlassClassificationMetrics metrics = mlContext.MulticlassClassification.Evaluate(model.Transform(test));
            ModelSummary summary = model.GetSummary();

            string zip = Path.Combine(outputDirectory, $"{FileName(name)}.zip");
            mlContext.Model.Save(model, inputSchema, zip);
            bool identical = ReloadPredictsTheSame(model, test, zip);

            var (latencyMs, imagesPerSecond) = InferenceTiming.Measure(model.GetImageClassifier());
            return new ModelResult(name, description, metrics.MicroAccuracy, summary.Parameters, summary.NonZeroParameters,
                summary.NonZeroMultiplyAccumulates, new FileInfo(zip).Length, latencyMs, imagesPerSecond, zip, identical, report);
        }

        private static string FileName(string name)
            => new string(name.Select(c => char.IsLetterOrDigit(c) ? char.ToLowerInvariant(c) : '-').ToArray());

        /// <summary>
        /// Loads the saved model in a new <see cref="MLContext"/>, as a scoring application would, and checks that a
        /// <see cref="PredictionEngine{TSrc, TDst}"/> of it predicts the first test images as the model in memory does.
        /// </summary>
        private static bool ReloadPredictsTheSame(ITransformer model, IDataView test, string zip)
        {
            var mlContext = new MLContext(seed: 1);
            ModelInput[] images = mlContext.Data.CreateEnumerable<ModelInput>(test, reuseRowObject: false).Take(PreviewCount).ToArray();
            ModelOutput[] expected = mlContext.Data.CreateEnumerable<ModelOutput>(model.Transform(test), reuseRowObject: false)
                .Take(PreviewCount).ToArray();
            ITransformer loaded = mlContext.Model.Load(zip, out DataViewSchema _);
            try
            {
                using PredictionEngine<ModelInput, ModelOutput> engine = mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(loaded);
                return images.Zip(expected).All(pair =>
                {
                    ModelOutput prediction = engine.Predict(pair.First);
                    return prediction.PredictedLabel == pair.Second.PredictedLabel
                        && prediction.Score.Zip(pair.Second.Score, (a, b) => Math.Abs(a - b)).Max() <= 1e-6f;
                });
            }
            finally
            {
                DisposeAll(loaded);
            }
        }

        /// <summary>The first test images predicted by the model saved in <paramref name="zip"/>, reloaded.</summary>
        private static void PreviewPredictions(MLContext mlContext, IDataView test, string zip)
        {
            ITransformer loaded = new MLContext(seed: 1).Model.Load(zip, out DataViewSchema _);
            try
            {
                using PredictionEngine<ModelInput, ModelOutput> engine = mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(loaded);
                var table = new Table()
                    .AddColumn(new TableColumn("#").RightAligned())
                    .AddColumn("True label")
                    .AddColumn("Predicted label")
                    .AddColumn(new TableColumn("Probability").RightAligned());
                int i = 0;
                foreach (ModelInput image in mlContext.Data.CreateEnumerable<ModelInput>(test, reuseRowObject: false).Take(PreviewCount))
                {
                    ModelOutput prediction = engine.Predict(image);
                    string color = prediction.PredictedLabel == image.Label ? "green" : "red";
                    table.AddRow(
                        (i++).ToString(CultureInfo.InvariantCulture),
                        Markup.Escape(image.Label),
                        $"[{color}]{Markup.Escape(prediction.PredictedLabel)}[/]",
                        prediction.Score.Max().ToString("P1", CultureInfo.InvariantCulture));
                }
                AnsiConsole.Write(table);
            }
            finally
            {
                DisposeAll(loaded);
            }
        }

        private static void DisposeAll(ITransformer model)
        {
            if (model is IEnumerable<ITransformer> chain)
            {
                foreach (ITransformer part in chain)
                    DisposeAll(part);
            }
            (model as IDisposable)?.Dispose();
        }
    }
}
