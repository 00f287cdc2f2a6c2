using Kcl.Core;

namespace Kcl;

/// <summary>One Kinesis record as the daemon delivered it.</summary>
/// <remarks>The data is never pooled or recycled: it stays valid for as long as your code holds it.</remarks>
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
        SequenceNumberModule.parse(sequenceNumber);
        Data = data;
        PartitionKey = partitionKey;
        SequenceNumber = sequenceNumber;
        SubSequenceNumber = subSequenceNumber;
        ApproximateArrivalTimestamp = approximateArrivalTimestamp;
    }

    internal Record(Kcl.Core.Record record)
    {
        Data = record.Data;
        PartitionKey = record.PartitionKey;
        SequenceNumber = record.SequenceNumber.Value;
        SubSequenceNumber = record.SubSequenceNumber;
        ApproximateArrivalTimestamp = Kcl.Core.Interop.Records.ArrivalTime(record);
    }

    /// <summary>The payload.</summary>
    public ReadOnlyMemory<byte> Data { get; }

    /// <summary>The partition key; empty when the daemon sent none.</summary>
    public string PartitionKey { get; }

    /// <summary>The sequence number: a string of digits (56 or more for real records), never an integer.</summary>
    public string SequenceNumber { get; }

    /// <summary>The position inside a KPL aggregate; 0 for records that were not aggregated.</summary>
    public long SubSequenceNumber { get; }

    /// <summary>When Kinesis received the record, if the daemon said.</summary>
    public DateTimeOffset? ApproximateArrivalTimestamp { get; }
}
