// Licensed under the MIT license.

using System.Collections.Generic;

namespace Microsoft.ML.Pruning.Onnx
{
    /// <summary>
    /// Where <see cref="OnnxNetworkTranslator"/> writes: an ONNX graph being built, seen through the few operations the
    /// translator needs. Names given as hints are made unique by the writer; the names it returns are the graph's.
    /// </summary>
    /// <remarks>ML.NET's ONNX export context implements it in <c>MLNet/OnnxExport.cs</c>; the translator itself knows
    /// nothing of ML.NET.</remarks>
    internal interface IOnnxGraphWriter
    {
        /// <summary>A new graph variable, named after <paramref name="hint"/>.</summary>
        string NewVariable(string hint);

        /// <summary>A float32 initializer of shape <paramref name="dims"/>.</summary>
        string AddFloats(string hint, IReadOnlyList<float> values, long[] dims);

        /// <summary>An int64 initializer of shape <paramref name="dims"/>.</summary>
        string AddInt64s(string hint, IReadOnlyList<long> values, long[] dims);

        /// <summary>A uint8 initializer of shape <paramref name="dims"/>.</summary>
        string AddBytes(string hint, IReadOnlyList<byte> values, long[] dims);

        /// <summary>A node of the default (<c>ai.onnx</c>) domain.</summary>
        void AddNode(string opType, IReadOnlyList<string> inputs, IReadOnlyList<string> outputs, string nameHint, IReadOnlyList<OnnxAttribute> attributes);
    }

    /// <summary>An integer or integer-list attribute of an ONNX node (the only kinds the translator uses).</summary>
    /// <param name="Name">The attribute name, e.g. <c>kernel_shape</c>.</param>
    /// <param name="Int">Its value when it is a single integer.</param>
    /// <param name="Ints">Its value when it is a list of integers.</param>
    internal readonly record struct OnnxAttribute(string Name, long? Int = null, long[]? Ints = null)
    {
        public static OnnxAttribute Of(string name, long value) => new(name, Int: value);

        public static OnnxAttribute Of(string name, params long[] values) => new(name, Ints: values);
    }
}
