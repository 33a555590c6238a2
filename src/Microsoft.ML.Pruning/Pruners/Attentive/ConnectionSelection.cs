// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.Attentive
{
    /// <summary>
    /// The selection rules of the top-down pass (Selective Tuning, as in STNet), each applied to a batch of gated units at
    /// once: one row per unit, one column per connection of its receptive field, holding the contribution s_q = w_q·h_q.
    /// </summary>
    internal static class ConnectionSelection
    {
        /// <summary>The (a, b) rows of the fully connected policy: keep marked inputs with s ≥ a·mean + b·std, most selective first.</summary>
        private static readonly float[] s_meanFactors = { 1f, 1f, 1f, 1f, 0.5f, 0.2f };

        private static readonly float[] s_stdFactors = { 3f, 2f, 1f, 0f, 0f, 0f };

        /// <summary>Rows of the fully connected policy table.</summary>
        public static int PolicyRows => s_meanFactors.Length;

        /// <summary>
        /// Stage 1, the winner-take-all threshold θ of each row of <paramref name="contributions"/> [P, Q]: sorted ascending,
        /// θ is the value at which the running sum first turns positive, so the contributions ≥ θ are the smallest top set
        /// whose sum is at least the row's sum. Rows whose sum is not positive get +∞ (nothing passes). Returns [P].
        /// </summary>
        public static Tensor Threshold(Tensor contributions)
        {
            using var scope = NewDisposeScope();
            // In descending order d_1 ≥ d_2 ≥ … with prefix sums P_r, the ascending running sum at d_r is total − P_(r−1):
            // θ = d_r for the smallest r with P_r ≥ total. The top set is usually small, so the largest few values are
            // looked at first and only the rows whose top set is larger are sorted in full.
            long columns = contributions.shape[1];
            Tensor total = contributions.sum(1, keepdim: true);
            Tensor theta = TopThreshold(contributions, total, Math.Min(columns, TopCandidates));
            if (columns > TopCandidates)
            {
                Tensor open = theta.isnan().nonzero().squeeze(1);
                if (open.numel() > 0)
                    theta.index_put_(TopThreshold(contributions.index_select(0, open), total.index_select(0, open), columns), open);
            }
            return theta.masked_fill_(total.squeeze(1).le(HeldScalars.Of(0)), HeldScalars.Of(float.PositiveInfinity)).MoveToOuterDisposeScope();
        }

        /// <summary>Columns looked at before a row is sorted in full.</summary>
        private const long TopCandidates = 48;

        /// <summary>θ from the <paramref name="count"/> largest values of each row; NaN where their sum stays below the total.</summary>
        private static Tensor TopThreshold(Tensor contributions, Tensor total, long count)
        {
            var (largest, _) = contributions.topk((int)count, 1, largest: true, sorted: true);
            Tensor reached = largest.cumsum(1).ge(total);
            if (count == contributions.shape[1])
                reached.select(1, count - 1).fill_(HeldScalars.Of(true)); // the whole row sums to the total, whatever the rounding
            Tensor first = reached.to(int32).argmax(1, keepdim: true);
            Tensor theta = largest.gather(1, first).squeeze(1);
            return theta.masked_fill(reached.any(1).logical_not(), HeldScalars.Of(float.NaN));
        }

        /// <summary>The connections of stage 2's candidates: s ≥ θ − ε and s &gt; 0 (a zero contribution carries nothing). [P, Q] bool.</summary>
        public static Tensor Marked(Tensor contributions, Tensor threshold, double epsilon)
        {
            using var scope = NewDisposeScope();
            using Scalar tolerance = epsilon.ToScalar();
            return contributions.ge(threshold.sub(tolerance).unsqueeze(1)).logical_and_(contributions.gt(HeldScalars.Of(0))).MoveToOuterDisposeScope();
        }

        /// <summary>
        /// Stage 2 of a fully connected unit, STNet's "699" policy: of the marked inputs, keep those with s ≥ a·mean + b·std
        /// (mean and population std over the marked contributions), taking the first row of the table (a, b) ∈ (1,3), (1,2),
        /// (1,1), (1,0), (½,0), (⅕,0) that keeps at least one input and stepping <paramref name="offset"/> rows further
        /// (more permissive), clipped at the last row. Returns [P, Q] bool.
        /// </summary>
        public static Tensor SelectLinear(Tensor contributions, Tensor marked, int offset)
        {
            using var scope = NewDisposeScope();
            Tensor markedFloat = marked.to(contributions.dtype);
            Tensor count = markedFloat.sum(1).clamp_min(HeldScalars.Of(1));
            Tensor values = contributions.mul(markedFloat);
            Tensor mean = values.sum(1).div(count);
            Tensor std = contributions.sub(mean.unsqueeze(1)).square().mul_(markedFloat).sum(1).div(count).sqrt_();
            Tensor a = tensor(s_meanFactors, device: contributions.device);
            Tensor b = tensor(s_stdFactors, device: contributions.device);
            Tensor thresholds = mean.unsqueeze(1).mul(a).add_(std.unsqueeze(1).mul(b)); // [P, rows]
            // A row keeps at least one input exactly when the largest marked contribution reaches its threshold.
            Tensor largest = values.masked_fill(marked.logical_not(), HeldScalars.Of(float.NegativeInfinity)).amax(new long[] { 1 }, keepdim: true);
            Tensor reaches = largest.ge(thresholds);
            // The first row that keeps something (the last row when none does), then the offset.
            Tensor first = reaches.any(1).logical_not().to(int64).mul(HeldScalars.Of(PolicyRows - 1))
                .add_(reaches.to(int32).argmax(1).to(int64).mul(reaches.any(1).to(int64)));
            using Scalar rowOffset = offset.ToScalar();
            Tensor row = first.add(rowOffset).clamp_max(HeldScalars.Of(PolicyRows - 1));
            Tensor chosen = thresholds.gather(1, row.unsqueeze(1));
            return marked.logical_and(contributions.ge(chosen)).MoveToOuterDisposeScope();
        }

        /// <summary>
        /// The 8-connected components of marked positions in each k×k window of <paramref name="marked"/> [M, k, k]: every
        /// marked position gets its component's label, the largest of its positions' 1-based row-major indices; unmarked
        /// positions get 0. Labels spread by 3×3 max pooling restricted to the marked positions until nothing changes.
        /// Returns [M, k, k] int64.
        /// </summary>
        public static Tensor Components(Tensor marked)
        {
            using var scope = NewDisposeScope();
            long m = marked.shape[0], k = marked.shape[1];
            if (marked.shape.Length != 3 || marked.shape[2] != k)
                throw new ArgumentException($"Expected [M, k, k] windows; got [{string.Join(", ", marked.shape)}].", nameof(marked));
            // Only windows with two or more marked positions need the propagation.
            using Scalar lastLabel = (k * k + 1).ToScalar();
            Tensor labels = arange(HeldScalars.Of(1L), lastLabel, dtype: int32, device: marked.device).view(1, k, k).mul(marked.to(int32));
            Tensor several = marked.view(m, -1).sum(1).gt(HeldScalars.Of(1)).nonzero().squeeze(1);
            if (several.numel() == 0)
                return labels.to(int64).MoveToOuterDisposeScope();
            Tensor mask = marked.index_select(0, several).to(int32);
            Tensor current = labels.index_select(0, several);
            for (long step = 0; step < k * k && several.numel() > 0; step++)
            {
                // The largest label among each position and its 8 neighbours, kept on marked positions only.
                Tensor padded = nn.functional.pad(current, new long[] { 1, 1, 1, 1 });
                Tensor next = current.clone();
                for (int dy = 0; dy < 3; dy++)
                {
                    for (int dx = 0; dx < 3; dx++)
                    {
                        if (dy != 1 || dx != 1)
                            next = next.maximum(padded.narrow(1, dy, k).narrow(2, dx, k));
                    }
                }
                next = next.mul_(mask);
                labels.index_copy_(0, several, next);
                // Windows that did not change have converged; only the others go on.
                Tensor changed = next.ne(current).view(next.shape[0], -1).any(1).nonzero().squeeze(1);
                several = several.index_select(0, changed);
                current = next.index_select(0, changed);
                mask = mask.index_select(0, changed);
            }
            return labels.to(int64).MoveToOuterDisposeScope();
        }

        /// <summary>
        /// Stage 2 of a convolution unit: within each input channel's k×k window, the 8-connected components of marked
        /// positions, each scored <paramref name="sumWeight"/>·(sum of its contributions) + (1 − <paramref name="sumWeight"/>)·(its
        /// number of positions); the single best component over all input channels of the receptive field is kept.
        /// <paramref name="contributions"/> and <paramref name="marked"/> are [P, C·k·k] in (C, kh, kw) order. Returns [P, C·k·k] bool.
        /// </summary>
        public static Tensor SelectConvolution(Tensor contributions, Tensor marked, long channels, long kernelSize, double sumWeight)
        {
            using var scope = NewDisposeScope();
            long p = contributions.shape[0], window = kernelSize * kernelSize;
            Tensor labels = Components(marked.view(p * channels, kernelSize, kernelSize)).view(p, channels, window);
            Tensor s = contributions.view(p, channels, window).mul(marked.view(p, channels, window).to(contributions.dtype));
            Tensor sums = zeros(p, channels, window + 1, dtype: contributions.dtype, device: contributions.device).scatter_add_(2, labels, s);
            Tensor counts = zeros(p, channels, window + 1, dtype: contributions.dtype, device: contributions.device)
                .scatter_add_(2, labels, marked.view(p, channels, window).to(contributions.dtype));
            using Scalar sumFactor = sumWeight.ToScalar(), countFactor = (1 - sumWeight).ToScalar();
            using Scalar labelsPerChannel = (window + 1).ToScalar(), channelCount = channels.ToScalar();
            Tensor score = sums.mul_(sumFactor).add_(counts.mul_(countFactor));
            score.select(2, 0).fill_(HeldScalars.Of(float.NegativeInfinity)); // label 0: unmarked positions
            Tensor best = score.view(p, -1).argmax(1);
            Tensor bestChannel = best.div(labelsPerChannel, rounding_mode: RoundingMode.floor);
            Tensor bestLabel = best.remainder(labelsPerChannel);
            Tensor channel = arange(channelCount, dtype: int64, device: contributions.device).view(1, channels, 1);
            Tensor selected = labels.eq(bestLabel.view(p, 1, 1)).logical_and_(channel.eq(bestChannel.view(p, 1, 1)))
                .logical_and_(marked.view(p, channels, window));
            return selected.view(p, channels * window).MoveToOuterDisposeScope();
        }
    }
}
