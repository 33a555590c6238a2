// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.ML.Pruning.Networks;

namespace Microsoft.ML.Pruning.Pruners.Channels
{
    /// <summary>What a round of channel pruning aims at: a kept fraction of the channels or a number of multiply-accumulates.</summary>
    internal readonly record struct ChannelTarget(double? KeptFraction, long? Macs);

    /// <summary>
    /// Turns a target into a number of channels kept per group: free groups share it (uniformly, or by one ranking of
    /// their channels' scores), groups with an override keep their own fraction, fixed groups keep everything. Counts are
    /// rounded to multiples of <c>roundTo</c> (a group keeps all its channels when it has fewer).
    /// </summary>
    internal static class ChannelAllocator
    {
        /// <summary>Under global allocation no group keeps fewer than this fraction of its channels (and at least one).</summary>
        public const double GlobalFloor = 0.1;

        /// <summary>One group's part in the allocation.</summary>
        /// <param name="Group">The group.</param>
        /// <param name="Scores">Its channels' scores (free groups under global allocation), or null.</param>
        /// <param name="Fixed">Kept whole (not prunable, ignored, residual, or not scored).</param>
        /// <param name="Override">A kept fraction of its own, or null.</param>
        /// <param name="OriginalChannels">Its channel count before the first round (fractions refer to it).</param>
        public sealed record Entry(ChannelGroup Group, double[]? Scores, bool Fixed, double? Override, int OriginalChannels);

        public static int[] Counts(NetworkDefinition definition, IReadOnlyList<Entry> entries, ChannelTarget target, LayerAllocation allocation, int roundTo)
        {
            int[] counts = entries.Select(e => e.Fixed ? e.Group.Channels : e.Override is double f ? Round(f * e.OriginalChannels, roundTo, e.Group.Channels) : e.Group.Channels).ToArray();
            int[] free = Enumerable.Range(0, entries.Count).Where(i => !entries[i].Fixed && entries[i].Override is null).ToArray();
            if (free.Length == 0)
                return counts;

            if (allocation == LayerAllocation.Uniform)
            {
                int[] At(double fraction)
                {
                    int[] result = (int[])counts.Clone();
                    foreach (int i in free)
                        result[i] = Round(fraction * entries[i].OriginalChannels, roundTo, entries[i].Group.Channels);
                    return result;
                }
                if (target.KeptFraction is double keptFraction)
                    return At(keptFraction);
                return Search(definition, entries, target.Macs!.Value, free.Length, (lo, hi) => (lo + hi) / 2, fraction => At(fraction), 0, 1, continuous: true);
            }

            // Global: the free groups' channels in ascending score order; removing walks down the list, each group stopping at its floor.
            var order = free
                .SelectMany(i => entries[i].Scores!.Select((score, channel) => (Group: i, Score: score, Channel: channel)))
                .OrderBy(c => c.Score).ThenBy(c => c.Group).ThenBy(c => c.Channel)
                .Select(c => c.Group)
                .ToArray();
            int[] AfterRemoving(int removals)
            {
                int[] result = (int[])counts.Clone();
                var left = free.ToDictionary(i => i, i => entries[i].Group.Channels);
                for (int r = 0, done = 0; r < order.Length && done < removals; r++)
                {
                    int i = order[r];
                    if (left[i] > Floor(entries[i]))
                    {
                        left[i]--;
                        done++;
                    }
                }
                foreach (int i in free)
                    result[i] = Round(left[i], roundTo, entries[i].Group.Channels);
                return result;
            }
            int removable = free.Sum(i => entries[i].Group.Channels - Floor(entries[i]));
            if (target.KeptFraction is double fractionKept)
            {
                int total = free.Sum(i => entries[i].Group.Channels);
                int wanted = (int)Math.Round(fractionKept * free.Sum(i => entries[i].OriginalChannels));
                return AfterRemoving(Math.Clamp(total - wanted, 0, removable));
            }
            return Search(definition, entries, target.Macs!.Value, free.Length, (lo, hi) => Math.Floor((lo + hi) / 2), removals => AfterRemoving((int)(removable - removals)),
                0, removable, continuous: false);
        }

        /// <summary>The channels to keep: the <paramref name="count"/> highest scores (ties to the lower index), ascending.</summary>
        public static long[] Keep(double[] scores, int count)
            => Enumerable.Range(0, scores.Length).OrderByDescending(c => scores[c]).ThenBy(c => c).Take(count).OrderBy(c => c).Select(c => (long)c).ToArray();

        /// <summary>
        /// The least pruning that meets <paramref name="macs"/>: bisection over a parameter (a kept fraction, or the channels
        /// left to remove) on which the network's multiply-accumulates grow monotonically.
        /// </summary>
        private static int[] Search(NetworkDefinition definition, IReadOnlyList<Entry> entries, long macs, int freeGroups,
            Func<double, double, double> middle, Func<double, int[]> countsAt, double low, double high, bool continuous)
        {
            long MacsOf(int[] counts) => ChannelSurgery.Resize(definition, entries.Select((e, i) => (e.Group, counts[i]))).MultiplyAccumulates();
            int[] smallest = countsAt(low);
            long least = MacsOf(smallest);
            if (least > macs)
            {
                long dense = definition.MultiplyAccumulates();
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"The MACs target ({macs:N0} per image, {dense / (double)macs:F2}x fewer than these {dense:N0}) cannot be reached by pruning the {freeGroups} free channel groups: " +
                    $"at the least they leave {least:N0} ({dense / (double)least:F2}x fewer). Lower Options.MacsReduction, or let more layers be pruned (PruneResidualWidth, IgnoredLayers, LayerKeptFractions)."));
            }
            if (MacsOf(countsAt(high)) <= macs)
                return countsAt(high);
            // Invariant: countsAt(low) meets the target, countsAt(high) does not.
            for (int iteration = 0; iteration < 64; iteration++)
            {
                double mid = middle(low, high);
                if (continuous ? high - low < 1e-6 : mid <= low)
                    break;
                if (MacsOf(countsAt(mid)) <= macs)
                    low = mid;
                else
                    high = mid;
            }
            return countsAt(low);
        }

        private static int Floor(Entry entry) => Math.Max(1, (int)Math.Ceiling(GlobalFloor * entry.OriginalChannels));

        /// <summary><paramref name="channels"/> rounded to the nearest multiple of <paramref name="roundTo"/> (at least one
        /// multiple), within [1, <paramref name="available"/>].</summary>
        public static int Round(double channels, int roundTo, int available)
        {
            int rounded = roundTo <= 1
                ? (int)Math.Round(channels, MidpointRounding.AwayFromZero)
                : Math.Max(roundTo, roundTo * (int)Math.Round(channels / roundTo, MidpointRounding.AwayFromZero));
            return Math.Clamp(rounded, 1, available);
        }
    }
}
