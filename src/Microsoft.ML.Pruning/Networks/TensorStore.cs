// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// The weight format of saved models: named tensors in a small self-describing binary layout, independent of
    /// TorchSharp's own format so that compact encodings can be added per tensor.
    /// </summary>
    internal static class TensorStore
    {
        // *** Binary format ***
        // int32: magic 0x574E5250 ("PRNW")
        // int32: format version (1)
        // int32: number of tensors
        // per tensor:
        //   string: name (BinaryWriter length-prefixed UTF-8)
        //   byte: element type (0 = float32, 1 = int64, 2 = uint8)
        //   int32: rank, then int64 × rank: shape
        //   byte: encoding (0 = dense, 1 = bitmask; bitmask only for float32, written when it is smaller than dense)
        //   dense: the elements, little-endian, row-major
        //   bitmask: ceil(elements / 8) bytes, bit i % 8 of byte i / 8 set when element i (row-major) is non-zero;
        //            then the non-zero elements in row-major order, little-endian
        private const int Magic = 0x574E5250;
        private const int Version = 1;
        private const byte Float32 = 0, Int64 = 1, UInt8 = 2;
        private const byte Dense = 0, Bitmask = 1;

        public static void Write(BinaryWriter writer, IEnumerable<(string Name, Tensor Value)> tensors)
        {
            var list = new List<(string, Tensor)>(tensors);
            writer.Write(Magic);
            writer.Write(Version);
            writer.Write(list.Count);
            foreach (var (name, value) in list)
            {
                using var cpu = value.detach().cpu().contiguous();
                writer.Write(name);
                writer.Write(cpu.dtype switch
                {
                    ScalarType.Float32 => Float32,
                    ScalarType.Int64 => Int64,
                    ScalarType.Byte => UInt8,
                    _ => throw new NotSupportedException($"Tensor '{name}' has unsupported element type {cpu.dtype}."),
                });
                writer.Write(cpu.shape.Length);
                foreach (long dimension in cpu.shape)
                    writer.Write(dimension);
                if (cpu.dtype == ScalarType.Float32)
                {
                    float[] values = cpu.data<float>().ToArray();
                    if (IsSmallerAsBitmask(values))
                    {
                        writer.Write(Bitmask);
                        WriteBitmask(writer, values);
                    }
                    else
                    {
                        writer.Write(Dense);
                        writer.Write(MemoryMarshal.AsBytes(values.AsSpan()));
                    }
                }
                else if (cpu.dtype == ScalarType.Byte)
                {
                    writer.Write(Dense);
                    writer.Write(cpu.data<byte>().ToArray());
                }
                else
                {
                    writer.Write(Dense);
                    writer.Write(MemoryMarshal.AsBytes(cpu.data<long>().ToArray().AsSpan()));
                }
            }
        }

        /// <summary>Reads tensors written by <see cref="Write"/>. Throws <see cref="FormatException"/> on damaged input.</summary>
        public static Dictionary<string, Tensor> Read(BinaryReader reader)
        {
            try
            {
                if (reader.ReadInt32() != Magic)
                    throw new FormatException("The weights stream does not start with the expected signature.");
                int version = reader.ReadInt32();
                if (version != Version)
                    throw new FormatException($"The weights stream has format version {version}; this library reads version {Version}.");
                int count = reader.ReadInt32();
                if (count < 0 || count > 100_000)
                    throw new FormatException($"The weights stream declares {count} tensors.");
                var result = new Dictionary<string, Tensor>(count, StringComparer.Ordinal);
                for (int i = 0; i < count; i++)
                {
                    string name = reader.ReadString();
                    byte type = reader.ReadByte();
                    int rank = reader.ReadInt32();
                    if (rank < 0 || rank > 8)
                        throw new FormatException($"Tensor '{name}' has rank {rank}.");
                    var shape = new long[rank];
                    long elements = 1;
                    for (int d = 0; d < rank; d++)
                    {
                        shape[d] = reader.ReadInt64();
                        if (shape[d] < 0 || shape[d] > int.MaxValue)
                            throw new FormatException($"Tensor '{name}' has dimension {shape[d]}.");
                        elements = checked(elements * shape[d]);
                    }
                    byte encoding = reader.ReadByte();
                    if (encoding != Dense && encoding != Bitmask)
                        throw new FormatException($"Tensor '{name}' has unknown encoding {encoding}.");
                    if (encoding == Bitmask)
                    {
                        if (type != Float32)
                            throw new FormatException($"Tensor '{name}' uses the bitmask encoding, which only float32 tensors may use.");
                        if (!result.TryAdd(name, tensor(ReadBitmask(reader, name, elements)).reshape(shape)))
                            throw new FormatException($"Tensor '{name}' appears twice in the weights stream.");
                        continue;
                    }
                    int elementSize = type switch
                    {
                        Float32 => 4,
                        Int64 => 8,
                        UInt8 => 1,
                        _ => throw new FormatException($"Tensor '{name}' has unknown element type {type}."),
                    };
                    byte[] bytes = reader.ReadBytes(checked((int)(elements * elementSize)));
                    if (bytes.Length != elements * elementSize)
                        throw new FormatException($"The weights stream ends inside tensor '{name}'.");
                    Tensor value = type switch
                    {
                        Float32 => tensor(MemoryMarshal.Cast<byte, float>(bytes).ToArray()).reshape(shape),
                        UInt8 => tensor(bytes).reshape(shape),
                        _ => tensor(MemoryMarshal.Cast<byte, long>(bytes).ToArray()).reshape(shape),
                    };
                    if (!result.TryAdd(name, value))
                        throw new FormatException($"Tensor '{name}' appears twice in the weights stream.");
                }
                return result;
            }
            catch (EndOfStreamException ex)
            {
                throw new FormatException("The weights stream ends unexpectedly.", ex);
            }
        }

        /// <summary>Whether the bitmask encoding stores these float32 values in fewer bytes than the dense one (the writer's choice).</summary>
        internal static bool IsSmallerAsBitmask(ReadOnlySpan<float> values)
        {
            long nonZero = 0;
            foreach (float value in values)
            {
                if (BitConverter.SingleToInt32Bits(value) != 0)
                    nonZero++;
            }
            return (values.Length + 7L) / 8 + 4L * nonZero < 4L * values.Length;
        }

        // Only +0.0 counts as absent, so -0.0 and every other value round-trip bit for bit.
        private static void WriteBitmask(BinaryWriter writer, float[] values)
        {
            var mask = new byte[(values.Length + 7) / 8];
            var nonZero = new List<float>();
            for (int i = 0; i < values.Length; i++)
            {
                if (BitConverter.SingleToInt32Bits(values[i]) != 0)
                {
                    mask[i >> 3] |= (byte)(1 << (i & 7));
                    nonZero.Add(values[i]);
                }
            }
            writer.Write(mask);
            writer.Write(MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(nonZero)));
        }

        private static float[] ReadBitmask(BinaryReader reader, string name, long elements)
        {
            int maskLength = checked((int)((elements + 7) / 8));
            byte[] mask = reader.ReadBytes(maskLength);
            if (mask.Length != maskLength)
                throw new FormatException($"The weights stream ends inside tensor '{name}'.");
            int nonZero = 0;
            foreach (byte b in mask)
                nonZero += System.Numerics.BitOperations.PopCount(b);
            if (elements % 8 != 0 && mask[^1] >> (int)(elements % 8) != 0)
                throw new FormatException($"Tensor '{name}' has mask bits beyond its {elements} elements.");
            byte[] bytes = reader.ReadBytes(checked(nonZero * 4));
            if (bytes.Length != nonZero * 4)
                throw new FormatException($"The weights stream ends inside tensor '{name}'.");
            ReadOnlySpan<float> stored = MemoryMarshal.Cast<byte, float>(bytes);
            var values = new float[elements];
            for (int i = 0, next = 0; i < values.Length; i++)
            {
                if ((mask[i >> 3] & (1 << (i & 7))) != 0)
                    values[i] = stored[next++];
            }
            return values;
        }
    }
}
