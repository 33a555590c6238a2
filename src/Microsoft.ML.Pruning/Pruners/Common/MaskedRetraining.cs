// Licensed under the MIT license.

using System;
using System.Diagnostics;
using System.Threading;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>
    /// Light retraining of a pruned network with its masks fixed: the shared training loop, with the mask written back
    /// after every optimizer step. Momentum and weight decay move pruned weights inside the step (the optimizer's
    /// buffers are per element), and the mask sets them back to exactly zero before the next forward pass.
    /// </summary>
    internal static class MaskedRetraining
    {
        /// <summary>Retrains <paramref name="network"/> in place; returns the optimizer steps taken and the wall time.</summary>
        public static (long Steps, TimeSpan Elapsed) Run(ClassifierNetwork network, ImageDataset data, PruningMask mask, TrainingSettings settings,
            long seed, IChannel? channel, CancellationToken cancellationToken, string phase = "retraining")
        {
            var clock = Stopwatch.StartNew();
            long steps = 0;
            mask.Apply(network);
            TrainingLoop.Run(network, data, null, settings, seed, channel, new TrainingHooks
            {
                Phase = phase,
                AfterStep = (step, _) =>
                {
                    mask.Apply(network);
                    steps = step;
                },
            }, cancellationToken);
            return (steps, clock.Elapsed);
        }
    }
}
