"""The public datasets `python -m engine fetch NAME` can download, and where a fetched one lives.

Each Source names its files: URL, size and SHA-256. A SHA-256 is *pinned* only where it was
computed from a copy of the very file (the MULAN files below: the blobs of tsoumakas/mulan at
commit 43f6389, served unchanged by raw.githubusercontent.com at that commit). Where no copy
was at hand the checksum is None: trust on *first download*, whose checksum the cache records
(checksums.json) and every later download must match. Sizes are None where not known before
the first download.

Formats (engine.data.convert reads each into a Dataset):
    mulan-arff   train and test ARFF (sparse or dense) + the XML list of the label attributes
    libsvm       train and test multi-label LibSVM text, bzip2-compressed ("l1,l2 f:v ...", f from 1)
    pecos-npz    one tar.gz of PECOS's xmc-base: Y.{trn,tst}.npz, tfidf-attnxml/X.{trn,tst}.npz,
                 output-items.txt (label names), under `member_root`

The cache is $XMC_DATA_HOME, else ~/.cache/xmc-lab; a fetched dataset is the folder
<cache>/<name> (train.txt, test.txt, optional labels.txt / features.txt, source.json).
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")       # a source's name is also its cache folder's


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source, as the converter reads it (`role`)."""
    role: str                   # "train", "test", "labels" or "archive"
    url: str                    # http(s)
    size: int | None = None     # bytes; None: not known before the first download
    sha256: str | None = None   # pinned from a copy of the very file; None: trust on first download


@dataclass(frozen=True)
class Source:
    """A dataset that can be fetched."""
    name: str                   # lower case, the cache folder's name
    format: str                 # "mulan-arff" | "libsvm" | "pecos-npz"
    files: tuple[RemoteFile, ...]
    about: str                  # what it is and where it comes from, one line
    member_root: str = ""       # pecos-npz: the folder of the dataset inside the archive

    @property
    def pinned(self):
        """Whether every file's SHA-256 is pinned here (else: trust on first download)."""
        return all(f.sha256 is not None for f in self.files)

    @property
    def size(self):
        """Total bytes to download, or None if some size is not known."""
        sizes = [f.size for f in self.files]
        return None if None in sizes else sum(sizes)


# ---------------------------------------------------------------------------------------------
# MULAN (github.com/tsoumakas/mulan, data/multi-label), pinned at one commit

MULAN_COMMIT = "43f6389095ad71984264db4387a8074b22bc7d4a"
_MULAN = f"https://raw.githubusercontent.com/tsoumakas/mulan/{MULAN_COMMIT}/data/multi-label/"


def _mulan(name, about, train, test, labels):
    """A MULAN source; train, test, labels are (path under data/multi-label/, size, sha256)."""
    files = tuple(RemoteFile(role, _MULAN + path, size, sha) for role, (path, size, sha)
                  in (("train", train), ("test", test), ("labels", labels)))
    return Source(name, "mulan-arff", files, about + " (MULAN repository, its train/test split)")


_MULAN_SOURCES = [
    _mulan("bibtex", "BibSonomy BibTeX entries, 1836 binary words, 159 tags",
           ("bibtex/bibtex-train.arff", 2292961, "8dcc9de6e0b2cebaec8c1f4fac78431adeeb73cfd3ab879b530a66d366e59174"),
           ("bibtex/bibtex-test.arff", 1215637, "9b03329cde64d3f994bdf7fbbac3f3b10fe185c311cb9ae725475f59c7f3f922"),
           ("bibtex/bibtex.xml", 5880, "08fe20013c1e75dcf1888c185f5187c95e76495b8518ce289b4d3afce38d1232")),
    _mulan("birds", "bird song recordings, 260 audio features (271 with location one-hot), 19 species",
           ("birds/birds-train.arff", 539367, "8f215db6ee163149901e753977f631ba8bea0e0e8e1abc42b234414822f8ae36"),
           ("birds/birds-test.arff", 540883, "51ba6326d65ccdd7c755b6461280eb6d2769c7f59d8e12fd4250f91e6ca28326"),
           ("birds/birds.xml", 889, "0f4ea547b2b3d538c8402662daf689e0d4520cc8b4f5ba113c2e7c01700f010f")),
    _mulan("corel5k", "Corel images, 499 binary visual words, 374 keywords (the sparse ARFF files)",
           ("corel5k/Corel5k-train-sparse.arff", 339535,
            "19eb253c447144bea74ffa86b4731a56022addae2ba7d0aab72ad07fdc02e9b3"),
           ("corel5k/Corel5k-test-sparse.arff", 60876,
            "e8f8e9cd052c43ba7bdfdf99d242f461fc8c2a03163466d921e576887b51d8a7"),
           ("corel5k/Corel5k.xml", 11222, "54ef6a6ccb7ca9b77524052b34b306d5d501661a5609b9d1cc7085b2b597679d")),
    _mulan("delicious", "del.icio.us bookmarks, 500 binary words, 983 tags",
           ("delicious/delicious-train.arff", 3056590,
            "030186cdb542ebdd32052fcdbb1ebe30115b3a22518c1b4b198c45eb827aebe1"),
           ("delicious/delicious-test.arff", 757565,
            "2dfb01723a819914b0ca83361177ed413ce3f2169851d9f228d4692915d63944"),
           ("delicious/delicious.xml", 34303, "4e0c0f93c7d86a39b9fca4aaefaa00e9428f2c80277732dfbf03ca48e2c14da2")),
    _mulan("emotions", "music clips, 72 rhythm and timbre features, 6 emotions",
           ("emotions/emotions-train.arff", 252080, "bbe704106c79bb8fb99c1d1d2e9bde081d6a2daeb01f100862f11fd91a3c1f98"),
           ("emotions/emotions-test.arff", 132007, "f13d4b746b7b5c8eb484bd751d6ac463d4560dff998a93516a5c1fe35daf6c8f"),
           ("emotions/emotions.xml", 323, "dbce8e6ccbbb2fcbfd9e9edbb230d7ed12692c6e13f59fdbc0161fa9b6cf2dc0")),
    _mulan("enron", "Enron e-mails, 1001 binary words, 53 categories",
           ("enron/enron-train.arff", 607799, "2988cefc1cdf7a8004a20ef84615cc8fa1b5d7434c16687283b41454e2d9d194"),
           ("enron/enron-test.arff", 324140, "2f3aad54a8f54caaab4ab01246fe9dd385ba944a2633028f52747b57eac5474e"),
           ("enron/enron.xml", 1604, "ed40c92d7f613eed51714912cab10dddc4ce456262137d8fef230d44c7f4457b")),
    _mulan("flags", "national flags, 19 features (43 with landmass, zone, language, religion one-hot), 7 colours",
           ("flags/flags-train.arff", 7707, "1861cdab7f8baf1aef6fb6198f304465ddfd99b7f9a435337c604119522df3c5"),
           ("flags/flags-test.arff", 4218, "09f6136fae47dcc2f0f491efd6401a11072cbfb0bfbb2666c63b35bb06aeeb16"),
           ("flags/flags.xml", 304, "7c9ed21a91b716b91f811323e20ee5a260ea2da62a5edcfeb1b91ec855a48f17")),
    _mulan("genbase", "proteins, 1185 motif features and the protein id (1847 with it one-hot), 27 functional classes",
           ("genbase/genbase-train.arff", 1714007, "37670db2c2b308a1c163d05501819526f1d65d659638ddfb76812d4ce384b5c6"),
           ("genbase/genbase-test.arff", 758739, "0e988520bedab39aa3f23f08f646c769bcdb6f9119ee298fd92b37127b226a36"),
           ("genbase/genbase.xml", 992, "198e8a1d7070e9603119e02e626cedc589db7577339b307b06f5192047b69eb9")),
    _mulan("medical", "clinical free text, 1449 binary words, 45 ICD-9-CM codes",
           ("medical/medical-train.arff", 69680, "c764f45756ab1c553b8b4eaaf5605a5610a43bbbcf37492d0f1a12bf9c9e2244"),
           ("medical/medical-test.arff", 99124, "6be472e75a6c0b0916187f343a398011b1b26f8f0ddc682c575312ad3532f6c4"),
           ("medical/medical.xml", 1818, "51fa9d5c09e48caff3f0a0c75db1c9aa85944f8e35451f3ad8bd56fc422286ce")),
    _mulan("scene", "images, 294 colour features, 6 scene classes",
           ("scene/scene-train.arff", 3127968, "b53ba93bdf412de922e3960389bcee24744fa3e872ce610511fc1d750888b64d"),
           ("scene/scene-test.arff", 3090742, "ea38d20296b3ff7e220f477a3b802a9bcb2d768881fe6ee163efbc97ea527a42"),
           ("scene/scene.xml", 285, "55d8b247b949ad5c52e5a73d8c6775ec6e5469ce9682465b45b333b68ee4bcc5")),
    _mulan("tmc2007-500", "aviation safety reports, the 500 top binary words, 22 problem types",
           ("tmc2007/tmc2007-500-train.arff", 3152791,
            "edfe7b7615c6f80e54c92a214437610d1ae36560c5cc6c4253b51c434d258273"),
           ("tmc2007/tmc2007-500-test.arff", 1054414,
            "b24f9c3f1eba77c9da0bbaff093ba41d331b7351be0167a8e1e3852c62e25e38"),
           ("tmc2007/tmc2007-500.xml", 783, "cb6a67c8ae72fd9b47d89f77aa5b7f6cafb4ba9c20b1124c65a95a3f2caec38d")),
    _mulan("yeast", "yeast genes, 103 expression features, 14 functional classes",
           ("yeast/yeast-train.arff", 1501117, "e759dc991ff54694a4ff9c4314f3be0d6fd2b1994a4b563f57e416394c6aebbd"),
           ("yeast/yeast-test.arff", 918515, "4aaac102bff9669a765bf0b378602e5cc8c3b181048282e2f003117b496d552a"),
           ("yeast/yeast.xml", 526, "c3056cc26444b5158b1588d1b73bec9c45429e10f0957ad085903423cb81f247")),
]

# ---------------------------------------------------------------------------------------------
# LibSVM's multi-label page (csie.ntu.edu.tw), trust on first download

_LIBSVM = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multilabel/"

_LIBSVM_SOURCES = [
    Source("mediamill", "libsvm",
           (RemoteFile("train", _LIBSVM + "mediamill/train-exp1.svm.bz2"),
            RemoteFile("test", _LIBSVM + "mediamill/test-exp1.svm.bz2")),
           "TRECVID video shots, 120 visual features, 101 concepts (LibSVM's copy, experiment 1 split)"),
]

# ---------------------------------------------------------------------------------------------
# Extreme Classification Repository sets as PECOS distributes them (archive.org), trust on first
# download: the XC Repository's train/test split, tf-idf bag-of-words features (tfidf-attnxml)

_PECOS = "https://archive.org/download/pecos-dataset/xmc-base/"


def _pecos(name, about):
    return Source(name, "pecos-npz", (RemoteFile("archive", f"{_PECOS}{name}.tar.gz"),),
                  about + " (XC Repository split, tf-idf bag of words, PECOS xmc-base)", f"xmc-base/{name}")


_PECOS_SOURCES = [
    _pecos("eurlex-4k", "EURLex-4K: EU law documents, EUROVOC descriptors"),
    _pecos("wiki10-31k", "Wiki10-31K: Wikipedia articles, social tags"),
    _pecos("amazoncat-13k", "AmazonCat-13K: Amazon products, categories"),
    _pecos("amazon-670k", "Amazon-670K: Amazon products, co-purchased items"),
    _pecos("wiki-500k", "Wiki-500K: Wikipedia articles, categories"),
    _pecos("amazon-3m", "Amazon-3M: Amazon products, co-purchased items"),
]

SOURCES = {s.name: s for s in _MULAN_SOURCES + _LIBSVM_SOURCES + _PECOS_SOURCES}


def cache_home():
    """The fetch cache: $XMC_DATA_HOME, else ~/.cache/xmc-lab (not created here)."""
    return Path(os.environ.get("XMC_DATA_HOME") or Path.home() / ".cache" / "xmc-lab")


def fetched_dir(name):
    """The cache folder of the fetched dataset `name` (it may not be there)."""
    return cache_home() / name


def fetched_datasets():
    """The names of the registry's datasets that are in the fetch cache, in registry order (a cache
    folder is complete once it is there: engine.data.fetch renames it into place last)."""
    return [name for name in SOURCES if fetched_dir(name).is_dir()]
