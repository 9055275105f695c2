"""Scaling-law sweep (absl script): run grid points, or analyse the results table.

    python training/scaling_sweep.py --grid grid.yaml                       # every remaining point
    python training/scaling_sweep.py --grid grid.yaml --index $SLURM_ARRAY_TASK_ID   # one point per job
    python training/scaling_sweep.py --grid grid.yaml --analyse

Same as `zoobot-tf scaling run|analyse`; see zoobot_tf/scaling.py for the grid format.
"""
from absl import app, flags

from zoobot_tf import scaling

flags.DEFINE_string("grid", None, "YAML/JSON grid file", required=True)
flags.DEFINE_integer("index", None, "run only this grid point (SLURM array index)")
flags.DEFINE_boolean("analyse", False, "fit and plot the results instead of training")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.analyse:
        grid = scaling.load_grid(FLAGS.grid)
        fits = scaling.analyse(scaling.read_results(grid["output_dir"]), grid["output_dir"])
        print(scaling.exponent_table(fits))
    else:
        scaling.run(FLAGS.grid, index=FLAGS.index)


if __name__ == "__main__":
    app.run(main)
