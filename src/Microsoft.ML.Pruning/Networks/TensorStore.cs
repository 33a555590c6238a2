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
        //   byte: element type (0 = float32, 1 = int64)
        //   int32: rank, then int64 × rank: shape
        //   byte: encoding (0 = dense)
        //   dense: the elements, little-endian, row-major
        private const int Magic = 0x574E5250;
        private const int Version = 1;
        private const byte Float32 = 0, Int64 = 1;
        private const byte Dense = 0;

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
                    _ => throw new NotSupportedException($"Tensor '{name}' has unsupported element type {cpu.dtype}."),
                });
                writer.Write(cpu.shape.Length);
                foreach (long dimension in cpu.shape)
                    writer.Write(dimension);
                writer.Write(Dense);
                if (cpu.dtype == ScalarType.Float32)
                    writer.Write(MemoryMarshal.AsBytes(cpu.data<float>().ToArray().AsSpan()));
                else
                    writer.Write(MemoryMarshal.AsBytes(cpu.data<long>().ToArray().AsSpan()));
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
                    if (encoding != Dense)
                        throw new FormatException($"Tensor '{name}' has unknown encoding {encoding}.");
                    int elementSize = type switch
                    {
                        Float32 => 4,
                        Int64 => 8,
                        _ => throw new FormatException($"Tensor '{name}' has unknown element type {type}."),
                    };
                    byte[] bytes = reader.ReadBytes(checked((int)(elements * elementSize)));
                    if (bytes.Length != elements * elementSize)
                        throw new FormatException($"The weights stream ends inside tensor '{name}'.");
                    Tensor value = type == Float32
                        ? tensor(MemoryMarshal.Cast<byte, float>(bytes).ToArray()).reshape(shape)
                        : tensor(MemoryMarshal.Cast<byte, long>(bytes).ToArray()).reshape(shape);
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
    }
}
