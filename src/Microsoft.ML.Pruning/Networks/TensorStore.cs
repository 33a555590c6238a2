// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
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
        //   string: name (BinaryWriter length-prefixed UTF-8, at most 1024 bytes)
        //   byte: element type (0 = float32, 1 = int64, 2 = uint8)
        //   int32: rank (0 to 8), then int64 × rank: shape
        //   byte: encoding (0 = dense, 1 = bitmask; bitmask only for float32, written when it is smaller than dense)
        //   dense: the elements, little-endian, row-major
        //   bitmask: ceil(elements / 8) bytes, bit i % 8 of byte i / 8 set when element i (row-major) is non-zero;
        //            then the non-zero elements in row-major order, little-endian
        // Nothing follows the last tensor. Float32 values are finite and at most DefinitionLimits.MaxAbsValue in magnitude
        // (checked when written and when read).
        private const int Magic = 0x574E5250;
        private const int Version = 1;
        private const byte Float32 = 0, Int64 = 1, UInt8 = 2;
        private const byte Dense = 0, Bitmask = 1;
        private const int MaxNameBytes = 1024;
        private const int MaxRank = 8;

        /// <summary>Writes the tensors. Throws <see cref="InvalidOperationException"/> naming the tensor when a float32
        /// value is not finite or beyond <see cref="DefinitionLimits.MaxAbsValue"/> (such a file would not load).</summary>
        public static void Write(BinaryWriter writer, IEnumerable<(string Name, Tensor Value)> tensors)
        {
            var list = new List<(string, Tensor)>(tensors);
            writer.Write(Magic);
            writer.Write(Version);
            writer.Write(list.Count);
            foreach (var (name, value) in list)
            {
                using var scope = NewDisposeScope();
                Tensor cpu = value.detach().cpu().contiguous();
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
                    int bad = IndexOfOutOfRange(values);
                    if (bad >= 0)
                    {
                        throw new InvalidOperationException(FormattableString.Invariant(
                            $"Tensor '{name}' has value {values[bad]} at index {bad}; only finite values of magnitude at most {DefinitionLimits.MaxAbsValue} can be saved."));
                    }
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

        /// <summary>Reads tensors written by <see cref="Write"/>. Throws <see cref="FormatException"/> naming the tensor and
        /// field on damaged input.</summary>
        public static Dictionary<string, Tensor> Read(BinaryReader reader) => Read(reader, null);

        /// <summary>
        /// Reads tensors written by <see cref="Write"/>, each checked against <paramref name="expected"/> (when given) before
        /// its values are allocated: the same names, element types and shapes, no more and no fewer, values within their
        /// constraints. Allocation never exceeds what the stream holds (a bitmask tensor: 32 times its mask).
        /// </summary>
        /// <exception cref="FormatException">The stream is damaged or does not hold the expected tensors; the message names
        /// the tensor and field.</exception>
        public static Dictionary<string, Tensor> Read(BinaryReader reader, IReadOnlyList<DefinitionLimits.ExpectedTensor>? expected)
        {
            Dictionary<string, DefinitionLimits.ExpectedTensor>? expectations = expected?.ToDictionary(e => e.Name, StringComparer.Ordinal);
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                if (reader.ReadInt32() != Magic)
                    throw new FormatException("The weights stream does not start with the expected signature.");
                int version = reader.ReadInt32();
                if (version != Version)
                    throw new FormatException($"The weights stream has format version {version}; this library reads version {Version}.");
                int count = reader.ReadInt32();
                if (count < 0 || count > 100_000 || (expectations is not null && count != expectations.Count))
                {
                    throw new FormatException(expectations is null
                        ? $"The weights stream declares {count} tensors."
                        : $"The weights stream declares {count} tensors; the network has {expectations.Count}.");
                }
                for (int i = 0; i < count; i++)
                {
                    string name = ReadName(reader, i);
                    if (result.ContainsKey(name))
                        throw new FormatException($"Tensor '{name}' appears twice in the weights stream.");
                    DefinitionLimits.ExpectedTensor? expectation = null;
                    if (expectations is not null && !expectations.TryGetValue(name, out expectation))
                        throw new FormatException($"The stored weights have '{name}', which the network does not.");
                    byte type = reader.ReadByte();
                    int elementSize = type switch
                    {
                        Float32 => 4,
                        Int64 => 8,
                        UInt8 => 1,
                        _ => throw new FormatException($"Tensor '{name}' has unknown element type {type}."),
                    };
                    if (expectation is not null && type != (byte)expectation.Element)
                        throw new FormatException($"Stored '{name}' has element type {TypeName(type)}, the network expects {TypeName((byte)expectation.Element)}.");
                    int rank = reader.ReadInt32();
                    if (rank < 0 || rank > MaxRank)
                        throw new FormatException($"Tensor '{name}' has rank {rank}.");
                    var shape = new long[rank];
                    long elements = 1;
                    for (int d = 0; d < rank; d++)
                    {
                        shape[d] = reader.ReadInt64();
                        if (shape[d] < 0 || shape[d] > int.MaxValue)
                            throw new FormatException($"Tensor '{name}' has dimension {shape[d]}.");
                        elements = elements > 0 && shape[d] > long.MaxValue / elements ? long.MaxValue : elements * shape[d];
                    }
                    if (expectation is not null && !shape.AsSpan().SequenceEqual(expectation.Shape))
                        throw new FormatException($"Stored '{name}' has shape [{string.Join(",", shape)}], the network expects {expectation.ShapeText}.");
                    if (elements > int.MaxValue)
                        throw new FormatException($"Tensor '{name}' has {elements} elements; at most {int.MaxValue} are allowed.");
                    byte encoding = reader.ReadByte();
                    if (encoding != Dense && encoding != Bitmask)
                        throw new FormatException($"Tensor '{name}' has unknown encoding {encoding}.");
                    Tensor value;
                    if (encoding == Bitmask)
                    {
                        if (type != Float32)
                            throw new FormatException($"Tensor '{name}' uses the bitmask encoding, which only float32 tensors may use.");
                        float[] values = ReadBitmask(reader, name, elements);
                        CheckFloats(name, values, expectation);
                        value = tensor(values).reshape(shape);
                    }
                    else
                    {
                        byte[] bytes = ReadExactly(reader, name, elements * elementSize);
                        if (type == Float32)
                        {
                            float[] values = MemoryMarshal.Cast<byte, float>(bytes).ToArray();
                            CheckFloats(name, values, expectation);
                            value = tensor(values).reshape(shape);
                        }
                        else if (type == UInt8)
                        {
                            CheckBytes(name, bytes, expectation);
                            value = tensor(bytes).reshape(shape);
                        }
                        else
                        {
                            long[] values = MemoryMarshal.Cast<byte, long>(bytes).ToArray();
                            CheckLongs(name, values, expectation);
                            value = tensor(values).reshape(shape);
                        }
                    }
                    result.Add(name, value);
                }
                if (expectations is not null)
                {
                    foreach (string name in expectations.Keys)
                    {
                        if (!result.ContainsKey(name))
                            throw new FormatException($"The stored weights lack '{name}'.");
                    }
                }
                if (reader.BaseStream.Read(new byte[1], 0, 1) != 0)
                    throw new FormatException($"The weights stream has bytes after its last tensor ('{result.Keys.LastOrDefault()}').");
                return result;
            }
            catch (Exception ex)
            {
                foreach (Tensor t in result.Values)
                    t.Dispose();
                if (ex is EndOfStreamException)
                    throw new FormatException(result.Count == 0 ? "The weights stream ends unexpectedly." : $"The weights stream ends unexpectedly after tensor '{result.Keys.Last()}'.", ex);
                throw;
            }
        }

        private static string TypeName(byte type) => type switch { Float32 => "float32", Int64 => "int64", UInt8 => "uint8", _ => type.ToString(System.Globalization.CultureInfo.InvariantCulture) };

        private static string ReadName(BinaryReader reader, int index)
        {
            int length;
            try
            {
                length = reader.Read7BitEncodedInt();
            }
            catch (FormatException ex)
            {
                throw new FormatException($"The name of tensor {index} in the weights stream has a damaged length.", ex);
            }
            if (length < 1 || length > MaxNameBytes)
                throw new FormatException($"The name of tensor {index} in the weights stream is {length} bytes long; it must be 1 to {MaxNameBytes}.");
            byte[] bytes = ReadExactly(reader, $"#{index}", length);
            try
            {
                return new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            }
            catch (ArgumentException ex)
            {
                throw new FormatException($"The name of tensor {index} in the weights stream is not valid UTF-8.", ex);
            }
        }

        /// <summary>Reads exactly <paramref name="count"/> bytes, after checking that the stream (when its length is known) holds them.</summary>
        private static byte[] ReadExactly(BinaryReader reader, string name, long count)
        {
            Stream stream = reader.BaseStream;
            if (count > int.MaxValue || (stream.CanSeek && count > stream.Length - stream.Position))
                throw new FormatException($"The weights stream ends inside tensor '{name}'. It declares {count} bytes; {(stream.CanSeek ? stream.Length - stream.Position : 0)} are left.");
            byte[] bytes = reader.ReadBytes((int)count);
            if (bytes.Length != count)
                throw new FormatException($"The weights stream ends inside tensor '{name}'.");
            return bytes;
        }

        private static int IndexOfOutOfRange(ReadOnlySpan<float> values)
        {
            for (int i = 0; i < values.Length; i++)
            {
                if (!(Math.Abs(values[i]) <= DefinitionLimits.MaxAbsValue))
                    return i;
            }
            return -1;
        }

        private static void CheckFloats(string name, float[] values, DefinitionLimits.ExpectedTensor? expectation)
        {
            int bad = IndexOfOutOfRange(values);
            if (bad >= 0)
                throw new FormatException(FormattableString.Invariant($"Tensor '{name}' has value {values[bad]} at index {bad}; stored values must be finite, at most {DefinitionLimits.MaxAbsValue} in magnitude."));
            if (expectation?.Constraint == TensorConstraint.NonNegative)
            {
                for (int i = 0; i < values.Length; i++)
                {
                    if (values[i] < 0)
                        throw new FormatException(FormattableString.Invariant($"Tensor '{name}' has value {values[i]} at index {i}; it must be at least 0."));
                }
            }
        }

        private static void CheckLongs(string name, long[] values, DefinitionLimits.ExpectedTensor? expectation)
        {
            if (expectation?.Constraint != TensorConstraint.AscendingBelow)
                return;
            for (int i = 0; i < values.Length; i++)
            {
                if (values[i] < 0 || values[i] >= expectation.Bound || (i > 0 && values[i] <= values[i - 1]))
                {
                    throw new FormatException(FormattableString.Invariant(
                        $"Tensor '{name}' has value {values[i]} at index {i}; its values must be strictly ascending, at least 0 and below {expectation.Bound}."));
                }
            }
        }

        private static void CheckBytes(string name, byte[] values, DefinitionLimits.ExpectedTensor? expectation)
        {
            if (expectation?.Constraint != TensorConstraint.Below)
                return;
            for (int i = 0; i < values.Length; i++)
            {
                if (values[i] >= expectation.Bound)
                    throw new FormatException($"Tensor '{name}' has value {values[i]} at index {i}; it must be below {expectation.Bound}.");
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
            byte[] mask = ReadExactly(reader, name, (elements + 7) / 8);
            int nonZero = 0;
            foreach (byte b in mask)
                nonZero += System.Numerics.BitOperations.PopCount(b);
            if (elements % 8 != 0 && mask[^1] >> (int)(elements % 8) != 0)
                throw new FormatException($"Tensor '{name}' has mask bits beyond its {elements} elements.");
            byte[] bytes = ReadExactly(reader, name, nonZero * 4L);
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
