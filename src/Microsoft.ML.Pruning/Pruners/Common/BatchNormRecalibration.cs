// Licensed under the MIT license.

using System.Linq;
using System.Threading;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Common
{
    /// <summary>
    /// Re-estimates batch-norm running statistics after the weights in front of them changed: forward passes in
    /// training mode without gradients, averaged over all batches with equal weight (momentum off), no weight update.
    /// </summary>
    internal static class BatchNormRecalibration
    {
        private const int ImagesPerBatch = 128;

        /// <summary>Recalibrates every batch-norm layer of <paramref name="network"/>; returns false when it has none.</summary>
        public static bool Run(ClassifierNetwork network, Tensor images, CancellationToken cancellationToken)
        {
            var norms = network.Module.modules().OfType<TorchSharp.Modules.NormBase>().ToList();
            if (norms.Count == 0)
                return false;
            var momenta = norms.Select(n => n.momentum).ToList();
            try
            {
                foreach (var norm in norms)
                {
                    norm.reset_running_stats();
                    norm.momentum = null;
                }
                network.Module.train();
                using var noGrad = no_grad();
                long n = images.shape[0];
                // A last batch of one image has no batch variance; fold it into the previous one.
                for (long start = 0; start < n;)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    long length = n - start <= ImagesPerBatch + 1 ? n - start : ImagesPerBatch;
                    using (NewDisposeScope())
                        network.Forward(images.narrow(0, start, length).to(network.Device));
                    start += length;
                }
            }
            finally
            {
                for (int i = 0; i < norms.Count; i++)
                    norms[i].momentum = momenta[i];
                network.Module.eval();
            }
            return true;
        }
    }
}
