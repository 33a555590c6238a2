// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class SparseTensorStoreTests
    {
        [TestMethod]
        public void SparseTensorsRoundTripBitForBitAndTakeLessSpace()
        {
            var values = new float[1003];
            values[0] = 1.5f;
            values[17] = -0.0f;
            values[500] = float.Epsilon;
            values[1002] = -3f;
            using Tensor sparse = tensor(values).reshape(17, 59);
            using Tensor dense = arange(0, 12, dtype: float32).reshape(3, 4);
            using Tensor indices = tensor(new long[] { 0, 0, 7 });

            byte[] bytes = Write(("sparse", sparse), ("dense", dense), ("indices", indices));
            Assert.IsLessThan(1003 * 4 / 4, bytes.Length, "the bitmask form is used for the sparse tensor");

            var read = TensorStore.Read(new BinaryReader(new MemoryStream(bytes)));
            try
            {
                CollectionAssert.AreEqual(new long[] { 17, 59 }, read["sparse"].shape);
                CollectionAssert.AreEqual(values.Select(BitConverter.SingleToInt32Bits).ToArray(),
                    read["sparse"].data<float>().ToArray().Select(BitConverter.SingleToInt32Bits).ToArray());
                CollectionAssert.AreEqual(dense.data<float>().ToArray(), read["dense"].data<float>().ToArray());
                CollectionAssert.AreEqual(new long[] { 0, 0, 7 }, read["indices"].data<long>().ToArray());
            }
            finally
            {
                foreach (Tensor t in read.Values)
                    t.Dispose();
            }
        }

        [TestMethod]
        public void TheEncodingIsChosenBySize()
        {
            Assert.IsTrue(TensorStore.IsSmallerAsBitmask(new float[64]));
            var half = Enumerable.Range(0, 64).Select(i => i % 2 == 0 ? 1f : 0f).ToArray();
            Assert.IsTrue(TensorStore.IsSmallerAsBitmask(half));
            var almostFull = Enumerable.Range(0, 64).Select(i => i == 0 ? 0f : 1f).ToArray();
            Assert.IsFalse(TensorStore.IsSmallerAsBitmask(almostFull));
        }

        [TestMethod]
        public void ATruncatedBitmaskTensorIsReportedByName()
        {
            using Tensor sparse = zeros(100, 10);
            sparse[3, 4] = tensor(2f);
            byte[] bytes = Write(("fc1.weight", sparse));
            var ex = Assert.ThrowsExactly<FormatException>(() => TensorStore.Read(new BinaryReader(new MemoryStream(bytes[..^2]))));
            StringAssert.Contains(ex.Message, "The weights stream ends inside tensor 'fc1.weight'.");
        }

        private static byte[] Write(params (string Name, Tensor Value)[] tensors)
        {
            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream))
                TensorStore.Write(writer, tensors);
            return stream.ToArray();
        }
    }
}
