(*
    How Kinesis maps records to shards and numbers them: a partition key's MD5, read as an unsigned 128-bit
    integer, falls into one shard's hash-key range, and a stream created with N shards splits 0 .. 2^128-1 into N
    equal ranges (the last one takes the remainder).
*)
[<RequireQualifiedAccess>]
module Kcl.Local.Shards

open System
open System.Buffers.Binary
open System.Globalization
open System.Numerics
open System.Security.Cryptography
open System.Text

/// 2^128: one more than the largest hash key.
let hashKeySpace = BigInteger.Pow(BigInteger 2, 128)

/// The shard id Kinesis gives the shard with this 0-based index, e.g. "shardId-000000000003".
let shardId (index: int) = sprintf "shardId-%012d" index

/// The MD5 of a partition key's UTF-8 bytes: its hash key, big-endian.
let private digestOf (partitionKey: string) =
    MD5.HashData(Encoding.UTF8.GetBytes partitionKey)

/// The hash key of a partition key: the MD5 of its UTF-8 bytes as an unsigned big-endian 128-bit integer.
let hashKey (partitionKey: string) : BigInteger =
    BigInteger(ReadOnlySpan(digestOf partitionKey), isUnsigned = true, isBigEndian = true)

/// The first hash key of each of `shards` equal ranges, as CreateStream assigns them.
let startingHashKeys (shards: int) : BigInteger list =
    let width = BigInteger.Divide(hashKeySpace, BigInteger shards)
    [ for i in 0 .. shards - 1 -> width * BigInteger i ]

/// The 0-based index of the shard whose range holds this hash key, among `shards` equal ranges.
let shardOfHashKey (shards: int) (key: BigInteger) : int =
    let width = BigInteger.Divide(hashKeySpace, BigInteger shards)
    int (BigInteger.Min(BigInteger.Divide(key, width), BigInteger(shards - 1)))

/// `shardOfHashKey` in 128-bit integers, for 2 shards or more.
let internal shardOfHashKey128 (shards: int) (key: UInt128) : int =
    let count = UInt128(0UL, uint64 shards)
    // floor(2^128 / shards), from 2^128 - 1, the largest value a UInt128 holds.
    let width =
        if UInt128.MaxValue % count = count - UInt128.One then
            UInt128.MaxValue / count + UInt128.One
        else
            UInt128.MaxValue / count

    int (UInt128.Min(key / width, count - UInt128.One))

/// The 0-based index of the shard a record with this partition key goes to. The same index as `shardOfHashKey` over
/// `hashKey`, without a BigInteger, and for a single shard without the MD5: this runs once per record of a generated
/// or piped stream, and the two took about a third of the time a million generated records took to load.
let shardOf (shards: int) (partitionKey: string) =
    if shards = 1 then
        0
    else
        shardOfHashKey128 shards (BinaryPrimitives.ReadUInt128BigEndian(ReadOnlySpan(digestOf partitionKey)))

/// The sequence number of the `ordinal`-th (1-based) record of a shard: 56 digits, like real ones, so that every
/// number of a run has the same length and numeric order is also text order.
let sequenceNumber (shardIndex: int) (ordinal: int64) =
    // Not sprintf: this runs once per record of a generated stream, and sprintf costs microseconds.
    "49"
    + shardIndex.ToString("D6", CultureInfo.InvariantCulture)
    + ordinal.ToString("D48", CultureInfo.InvariantCulture)

/// Compares two digit strings numerically.
let compareDigits (a: string) (b: string) = Kcl.Core.DaemonRules.compareDigits a b
