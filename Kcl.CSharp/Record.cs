using Kcl.Core;
using Microsoft.FSharp.Core;

namespace Kcl;

/// <summary>One Kinesis record as the daemon delivered it.</summary>
/// <remarks>
/// The data is never pooled or recycled: it stays valid for as long as your code holds it. The payloads of a decoded
/// batch share blocks of up to 64 KiB, so a record kept for long keeps its block: keep <c>Data.ToArray()</c> instead.
/// </remarks>
public sealed class Record
{
    /// <summary>Creates a record, for example to test a processor.</summary>
    /// <param name="data">The payload.</param>
    /// <param name="partitionKey">The partition key.</param>
    /// <param name="sequenceNumber">The sequence number: ASCII digits, or a sentinel such as TRIM_HORIZON.</param>
    /// <param name="subSequenceNumber">The position inside a KPL aggregate; 0 for records that were not aggregated.</param>
    /// <param name="approximateArrivalTimestamp">When Kinesis received the record, if known.</param>
    /// <exception cref="ArgumentException">The sequence number is neither digits nor a sentinel.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The sub-sequence number is negative.</exception>
    public Record(
        ReadOnlyMemory<byte> data,
        string partitionKey,
        string sequenceNumber,
        long subSequenceNumber,
        DateTimeOffset? approximateArrivalTimestamp)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        ArgumentOutOfRangeException.ThrowIfNegative(subSequenceNumber);
        var parsed = SequenceNumberModule.parse(sequenceNumber);
        core = new Kcl.Core.Record(
            data,
            partitionKey,
            parsed,
            subSequenceNumber,
            approximateArrivalTimestamp is { } time ? FSharpOption<DateTimeOffset>.Some(time) : null);
    }

    // The daemon's record as the core decoded it: a batch wraps each one rather than copying its fields.
    internal Record(Kcl.Core.Record record) => core = record;

    private readonly Kcl.Core.Record core;

    /// <summary>The payload.</summary>
    public ReadOnlyMemory<byte> Data => core.Data;

    /// <summary>The partition key; empty when the daemon sent none.</summary>
    public string PartitionKey => core.PartitionKey;

    /// <summary>The sequence number: a string of digits (56 or more for real records), never an integer.</summary>
    public string SequenceNumber => core.SequenceNumber.Value;

    /// <summary>The position inside a KPL aggregate; 0 for records that were not aggregated.</summary>
    public long SubSequenceNumber => core.SubSequenceNumber;

    /// <summary>When Kinesis received the record, if the daemon said.</summary>
    public DateTimeOffset? ApproximateArrivalTimestamp => Kcl.Core.Interop.Records.ArrivalTime(core);
}
