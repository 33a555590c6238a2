// Licensed under the MIT license.

using System;

namespace Microsoft.ML.Pruning.Pruners.ShiftAttention
{
    /// <summary>
    /// The inverse temperature of the attention softmax: multiplied by the same factor after every optimizer step, so it
    /// grows geometrically from the initial to the final value over the whole run.
    /// </summary>
    internal static class TemperatureSchedule
    {
        /// <summary>The temperature after <paramref name="step"/> of <paramref name="totalSteps"/> steps:
        /// <c>initial · (final / initial)^(step / totalSteps)</c>, exactly <paramref name="final"/> at the last step.</summary>
        public static double At(double initial, double final, long step, long totalSteps)
        {
            if (totalSteps <= 0 || step >= totalSteps)
                return final;
            return step <= 0 ? initial : initial * Math.Pow(final / initial, (double)step / totalSteps);
        }
    }
}
