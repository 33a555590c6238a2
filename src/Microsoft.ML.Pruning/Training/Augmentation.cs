// Licensed under the MIT license.

using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>Batch-level image augmentation, vectorized: no per-image loop.</summary>
    internal static class Augmentation
    {
        /// <summary>
        /// Random crop after zero padding by <paramref name="padding"/> pixels, and (optionally) a horizontal flip of
        /// half the images, each image drawing its own offsets from <paramref name="generator"/>.
        /// </summary>
        public static Tensor RandomCropAndFlip(Tensor images, int padding, bool flip, Generator generator)
        {
            long n = images.shape[0], c = images.shape[1], h = images.shape[2], w = images.shape[3];
            Device device = images.device;
            Tensor padded = padding > 0 ? nn.functional.pad(images, new long[] { padding, padding, padding, padding }) : images;

            // Row and column source indices per image; a flip reverses the column order.
            Tensor rowOffset = randint(0, 2 * padding + 1, new long[] { n, 1 }, generator: generator).to(device);
            Tensor columnOffset = randint(0, 2 * padding + 1, new long[] { n, 1 }, generator: generator).to(device);
            using Scalar height = h.ToScalar(), width = w.ToScalar(), lastColumn = (w - 1).ToScalar();
            Tensor rows = rowOffset + arange(height, device: device).unsqueeze(0);
            Tensor columnRange = arange(width, device: device).unsqueeze(0);
            if (flip)
            {
                Tensor flipped = randint(0, 2, new long[] { n, 1 }, generator: generator).to(device);
                columnRange = columnRange + flipped * columnRange.mul(HeldScalars.Of(-2)).add_(lastColumn);
            }
            Tensor columns = columnOffset + columnRange;

            long paddedWidth = padded.shape[3];
            Tensor rowIndex = rows.view(n, 1, h, 1).expand(n, c, h, paddedWidth);
            Tensor selectedRows = padded.gather(2, rowIndex);
            Tensor columnIndex = columns.view(n, 1, 1, w).expand(n, c, h, w);
            return selectedRows.gather(3, columnIndex);
        }
    }
}
