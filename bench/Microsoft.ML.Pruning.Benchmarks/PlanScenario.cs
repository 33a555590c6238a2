// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Runtime;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>plan</c>: where a saved model's time goes on the compact runtime. Each model zip is compiled as the
    /// transformer compiles it, and a batch (256 images by default, <c>--batch N</c>) is run through the steps one at a
    /// time, each step timed on its own (median of 10 repetitions after 2 warm-ups), next to the whole plan's time, which
    /// can be lower: the plan runs consecutive image-by-image steps as one segment per image. Prints one line per step;
    /// writes no JSON (it is a diagnostic, not a comparison).
    /// </summary>
    internal static class PlanScenario
    {
        public static int Run(string[] args)
        {
            string[] zips = args.Skip(1).Where(a => a.EndsWith(".zip", StringComparison.OrdinalIgnoreCase)).ToArray();
            if (zips.Length == 0)
                throw new ArgumentException("give one or more model zips: bench plan model.zip [other.zip ...] [--batch N]");
            int images = BenchArgs.Option(args, "--batch", 256);
            if (images < 1 || images > InferencePlan.MaxPassImages)
                throw new ArgumentException($"--batch must be between 1 and {InferencePlan.MaxPassImages}; got {images}");
            var ml = new MLContext(seed: 1);
            foreach (string zip in zips)
            {
                ITransformer model = ml.Model.Load(zip, out _);
                try
                {
                    var network = ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single().Network;
                    using InferencePlan plan = InferencePlan.Compile(network);
                    float[] batch = InferenceTiming.Inputs(network.Definition.Input).Batch[..(images * network.Definition.Input.Size)];
                    int largest = plan.Steps.Select(s => Math.Max(s.InputSize, s.OutputSize)).Append(network.Definition.Input.Size).Max();
                    float[] first = GC.AllocateUninitializedArray<float>(largest * images, pinned: true);
                    float[] second = GC.AllocateUninitializedArray<float>(largest * images, pinned: true);
                    var probabilities = new float[images * network.Definition.Classes];
                    var steps = plan.Steps.Select(_ => new List<double>()).ToArray();
                    // The steps inside residual blocks (body, then shortcut), timed on the block's input.
                    var inner = new Dictionary<InferenceStep, List<double>>();
                    float[] third = GC.AllocateUninitializedArray<float>(largest * images, pinned: true);
                    float[] fourth = GC.AllocateUninitializedArray<float>(largest * images, pinned: true);
                    var whole = new List<double>();
                    for (int repetition = -2; repetition < 10; repetition++)
                    {
                        Array.Copy(batch, first, batch.Length);
                        float[] current = first, next = second;
                        for (int s = 0; s < plan.Steps.Count; s++)
                        {
                            if (plan.Steps[s] is ResidualStep residual)
                            {
                                foreach (InferenceStep[] branch in new[] { residual.Body.ToArray(), residual.Shortcut.ToArray() })
                                {
                                    float[] source = current, target = third;
                                    foreach (InferenceStep step in branch)
                                    {
                                        var part = Stopwatch.StartNew();
                                        step.Run(source, target, images);
                                        if (repetition >= 0)
                                            (inner.TryGetValue(step, out var times) ? times : inner[step] = new List<double>()).Add(part.Elapsed.TotalMilliseconds);
                                        source = target;
                                        target = ReferenceEquals(target, third) ? fourth : third;
                                    }
                                }
                            }
                            var clock = Stopwatch.StartNew();
                            plan.Steps[s].Run(current, next, images);
                            if (repetition >= 0)
                                steps[s].Add(clock.Elapsed.TotalMilliseconds);
                            (current, next) = (next, current);
                        }
                        var total = Stopwatch.StartNew();
                        plan.Predict(batch, probabilities);
                        if (repetition >= 0)
                            whole.Add(total.Elapsed.TotalMilliseconds);
                    }
                    Console.WriteLine(FormattableString.Invariant(
                        $"{zip}: {images} images, whole plan {InferenceTiming.Median(whole.ToArray()):F2} ms, steps one by one {steps.Sum(t => InferenceTiming.Median(t.ToArray())):F2} ms"));
                    for (int s = 0; s < plan.Steps.Count; s++)
                    {
                        Print(plan.Steps[s], InferenceTiming.Median(steps[s].ToArray()), "  ");
                        if (plan.Steps[s] is ResidualStep residual)
                        {
                            foreach (InferenceStep step in residual.Body.Concat(residual.Shortcut))
                                Print(step, InferenceTiming.Median(inner[step].ToArray()), "    ");
                        }
                    }
                }
                finally
                {
                    ModelCache.DisposeAll(model);
                }
            }
            return 0;
        }

        private static void Print(InferenceStep step, double milliseconds, string indent)
        {
            string work = step switch
            {
                CompactConvolutionStep convolution => FormattableString.Invariant(
                    $"  {convolution.Kernel.Terms:N0} terms, {convolution.Kernel.MultiplyAccumulates:N0} MACs per image, in {string.Join("x", step.InputShape)} out {string.Join("x", step.OutputShape)}"),
                _ => FormattableString.Invariant($"  in {string.Join("x", step.InputShape)} out {string.Join("x", step.OutputShape)}"),
            };
            Console.WriteLine(FormattableString.Invariant($"{indent}{step.Layers,-36} {step.Kind,-34} {milliseconds,9:F3} ms{work}"));
        }
    }
}
